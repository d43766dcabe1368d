"""``make mutation``'s score: what ``mutmut run`` left in ``mutants/``, with the equivalent
mutants listed in ``tests/unit/MUTATION.md`` set aside.

Prints the counts, the score, and each surviving mutant that is not listed as equivalent;
exits 1 when the score is under ``--min`` (percent).

The score is killed / (killed + survived), over the mutants the unit tests reach; a mutant no
unit test reaches ("no tests": a function doing I/O, tested by tests/integration) is counted
and named apart, not scored.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

MUTANTS = Path("mutants")
EQUIVALENT_LIST = Path("tests/unit/MUTATION.md")
# A mutant's name as mutmut prints it: bridge.module.x_function__mutmut_3 (methods: ǁClassǁ).
NAME = re.compile(r"`(bridge\.[^`\s]+__mutmut_\d+)`")


def results() -> dict[str, str]:
    """Each mutant's status (killed, survived, no tests, timeout…) from mutmut's ``.meta``
    files."""
    found: dict[str, str] = {}
    for meta in sorted(MUTANTS.glob("**/*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        found.update({name: status_by_exit_code[code] for name, code in codes.items()})
    return found


def equivalents() -> set[str]:
    """The mutants ``tests/unit/MUTATION.md`` explains as equivalent."""
    return set(NAME.findall(EQUIVALENT_LIST.read_text()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min", type=float, default=0.0, help="lowest passing score (%%)")
    args = parser.parse_args()
    status = results()
    if not status:
        print("no mutmut results in mutants/: run `mutmut run` first")
        return 1
    equivalent = equivalents() & status.keys()
    counts = Counter(s for name, s in status.items() if name not in equivalent)
    killed = counts["killed"] + counts["timeout"]  # a mutant that hangs the tests is caught
    survivors = sorted(n for n, s in status.items() if s == "survived" and n not in equivalent)
    untested = sorted(n for n, s in status.items() if s == "no tests")
    scored = killed + len(survivors)
    score = 100.0 * killed / scored if scored else 0.0
    print(f"mutants: {len(status)}; killed {killed} (timeouts {counts['timeout']}), survived "
          f"{len(survivors)}, equivalent (tests/unit/MUTATION.md) {len(equivalent)}, "
          f"reached by no unit test {len(untested)}, other {_other(counts)}")  # fmt: skip
    for name in survivors:
        print(f"  survived: {name}")
    for function in sorted({name.rsplit("__mutmut_", 1)[0] for name in untested}):
        print(f"  reached by no unit test: {function}")
    print(f"mutation score: {score:.1f} % ({killed}/{scored})")
    return 0 if score >= args.min else 1


def _other(counts: Counter[str]) -> int:
    """Mutants neither killed, survived nor unreached (not checked, suspicious, …)."""
    scored = {"killed", "timeout", "survived", "no tests"}
    return sum(n for status, n in counts.items() if status not in scored)


if __name__ == "__main__":
    sys.exit(main())
