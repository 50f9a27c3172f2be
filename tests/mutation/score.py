"""The mutation score of `make mutate` and the survivors docs/testing.md does not explain."""

import json
import re
import sys
from collections import Counter
from pathlib import Path

# a mutant's name, also inside docs/testing.md's table cells (`name` | ...)
NAME = r"[^\s`|:]+__mutmut_\d+"
# `mutmut results --all true` lines: "    <module>.<function>__mutmut_<n>: <status>"
RESULT = re.compile(rf"^\s*(?P<name>{NAME}): (?P<status>.+)$")


def main(stats_path: str, results_path: str, explained_path: str) -> int:
    stats = json.loads(Path(stats_path).read_text())
    results = [m.groupdict() for m in map(RESULT.match, Path(results_path).read_text().splitlines()) if m]
    explained = set(re.findall(NAME, Path(explained_path).read_text()))
    survivors = [r["name"] for r in results if r["status"] == "survived"]
    unexplained = [name for name in survivors if name not in explained]
    detected = stats["killed"] + stats["timeout"]
    judged = detected + stats["survived"]
    print(f"mutants {stats['total']}: killed {stats['killed']}, timeout {stats['timeout']}, "
          f"survived {stats['survived']}, no tests {stats['no_tests']}, "
          f"suspicious {stats['suspicious']}, skipped {stats['skipped']}")
    print(f"mutation score: {detected}/{judged} = {100 * detected / max(judged, 1):.1f}% "
          f"of the mutants the selected tests reach")
    print(f"survivors explained in docs/testing.md: {len(survivors) - len(unexplained)}; "
          f"unexplained: {len(unexplained)}")
    by_function = Counter(name.rsplit("__mutmut_", 1)[0] for name in unexplained)
    for function, count in sorted(by_function.items()):
        print(f"  {count:3d}  {function}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
