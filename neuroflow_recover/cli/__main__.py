"""`python -m neuroflow_recover.cli`: the same as the `neuroflow-recover` command."""

from . import main

main()
