"""`masklet serve` refuses bad options before loading anything, in one line."""

from __future__ import annotations

import socket

from click.testing import CliRunner

from masklet.cli import main


def test_port_in_use_and_missing_root(tmp_path):
    runner = CliRunner()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = runner.invoke(main, ["serve", "--port", str(port), "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert f"masklet: error: cannot listen on 127.0.0.1:{port}" in result.output
    result = runner.invoke(main, ["serve", "--roots", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert "--max-upload-mb" in runner.invoke(main, ["serve", "--help"]).output
