"""Every `wsgate` command refuses a bad argument with one ``Error:`` line and exit status 1 (the
README's promise), not argparse's usage text and status 2."""

from __future__ import annotations

import pytest

from wsgate import cli


@pytest.mark.parametrize(
    "command", ["up", "adapter", "router", "enforcer", "control-plane", "echo-backend"]
)
def test_a_bad_argument_is_one_error_line_and_status_1(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--no-such-flag"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("Error: unrecognized arguments: --no-such-flag"), err
    assert f"`wsgate {command} --help` shows the usage" in err


def test_help_still_shows_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["adapter", "--help"])
    assert exited.value.code == 0
    assert "usage: wsgate adapter" in capsys.readouterr().out
