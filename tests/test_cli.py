"""The command line: ``python -m hjbcourse solve ...`` with a tiny budget (the hidden ``--iterations``)."""
import json
import subprocess
import sys

import pytest

from hjbcourse import cli


def test_solve_lqr_writes_summary_figures_and_checkpoint(tmp_path, capsys):
    cli.main(["solve", "lqr", "--preset", "smoke", "--iterations", "1", "--no-progress", "--device", "cpu",
              "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "value_rel_l2" in printed and "| quantity | value |" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["problem"] == "lqr" and summary["iterations"] == 1 and summary["preset"] == "smoke"
    assert summary["P_exact"][0][0] == pytest.approx(0.26598, rel=1e-4)  # the Riccati constant of the chapter
    assert len(summary["history"]["value_fit_mse"]) == 1
    for name in ("history.png", "value_policy.png", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_size > 0


def test_solve_merton_reports_its_constants(tmp_path):
    cli.main(["solve", "merton", "--preset", "smoke", "--iterations", "1", "--no-progress", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["pi_exact"] == pytest.approx(0.625) and summary["k_exact"] == pytest.approx(0.0478125)
    assert "pi_rel" in summary["errors"]


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        cli.main(["solve", "heston"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="preset"):
        cli.main(["solve", "lqr", "--preset", "huge", "--no-progress"])


def test_module_entry_point_prints_help():
    out = subprocess.run([sys.executable, "-m", "hjbcourse", "solve", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "--preset" in out.stdout and "--iterations" not in out.stdout


def test_the_cli_solves_the_course_problems():
    from hjbcourse import course

    assert cli.CHAPTER_PROBLEMS is course.CHAPTER_PROBLEMS
    assert course.chapter_problem("merton").exact().pi == pytest.approx(0.625)
    with pytest.raises(ValueError, match="problem"):
        course.chapter_problem("heston")
