"""Every command the README and docs/ show stays true as written: a `sweep/run.py` command's keys
and values pass the checks the command itself makes before it trains (its first job composed and
validated when it is a grid), a report, predict or serve command's options are that command's,
a benchmark it names exists, and each page's links lead to files that exist."""

from __future__ import annotations

import re
import shlex

import pytest
from helpers import REPO, make_config, predict, report

from sweep.errors import UserError
from sweep.search.borrowed import grid_jobs
from sweep.validate import check_command_line_keys, check_command_line_targets, validate

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "tests" / "benchmarks" / "README.md"]


def commands() -> list[tuple[str, str]]:
    """(page, command) for every command line in the pages' ```bash blocks, continuations joined
    and trailing comments dropped."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line and not line.startswith("#"):
                    found += [(page.name, part.strip()) for part in line.split(" && ")]
    return found


COMMANDS = commands()


def _args(command: str, *programs: str) -> list[str] | None:
    words = shlex.split(command)
    for program in programs:
        n = len(program.split())
        if words[:n] == program.split():
            return words[n:]
    return None


@pytest.mark.parametrize(("page", "command"), [c for c in COMMANDS if _args(c[1], "python sweep/run.py", "sweep-run")])
def test_a_run_command_passes_the_checks_it_meets_before_training(page, command):
    args = [a for a in _args(command, "python sweep/run.py", "sweep-run") if a not in ("-m", "--multirun")]
    check_command_line_keys(args, REPO / "conf")
    check_command_line_targets(args)
    task = [a for a in args if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        first = grid_jobs(task)[0]
    except Exception:  # noqa: BLE001 - an Optuna search space (interval, tag) is no grid: its keys were checked
        return
    try:
        validate(make_config(*first))
    except UserError as e:  # pretrained weights this machine has no network to download: the machine, not the page
        if "could not be downloaded" not in str(e):
            raise


def _options(run: object, command: str) -> set[str]:
    ran = run("--help", cwd=REPO)
    assert ran.returncode == 0, ran.stderr
    return set(re.findall(r"--[\w-]+", ran.stdout))


HELP = {"python sweep/report.py": report, "sweep-report": report, "python sweep/predict.py": predict,
        "sweep-predict": predict}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("page", "command"), [c for c in COMMANDS if _args(c[1], *HELP, "sweep-serve",
                                                                            "python sweep/serve.py")])  # fmt: skip
def test_a_report_predict_or_serve_command_uses_that_commands_options(page, command):
    program = next(p for p in (*HELP, "sweep-serve", "python sweep/serve.py") if _args(command, p) is not None)
    given = {a.split("=")[0] for a in _args(command, program) if a.startswith("--")}
    if program in HELP:
        known = _options(HELP[program], command)
    else:
        from sweep import serve  # its --help needs FastAPI; its parser does not

        known = {o for action in serve._parser()._actions for o in action.option_strings}
    assert given <= known, f"{page}: {command}: {sorted(given - known)} not among {sorted(known)}"


@pytest.mark.parametrize(("page", "command"), [c for c in COMMANDS if c[1].startswith("python tests/")])
def test_a_benchmark_a_page_names_exists(page, command):
    assert (REPO / shlex.split(command)[1]).is_file()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_pages_links_lead_to_files_that_exist(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if not target.startswith(("http://", "https://")):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which is not there"


def test_the_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    assert not [line for line in lines if re.search(r"\b20\d\d-\d\d-\d\d\b", line)]  # dated figures live elsewhere
