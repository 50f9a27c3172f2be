"""Notifications: the channels (webhook, e-mail, Apprise) and delivering the outbox."""
