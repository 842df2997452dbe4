"""Configuration the usual way: a TOML file, UDPDHT_* variables and flags, flags winning; the
client commands' --node from $UDPDHT_NODE, --timeout and --tries; --log-format json."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import sys
import time
import tomllib
from pathlib import Path

import pytest
from helpers import node_process, udpdht

from udpdht.admin import COOKIE_FILE, default_data_dir
from udpdht.cli import main


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No UDPDHT_* variable of the developer's shell leaks into these in-process runs."""
    for name in list(os.environ):
        if name.startswith("UDPDHT_"):
            monkeypatch.delenv(name)


def print_config(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str, str]:
    """``udpdht node --print-config FLAGS`` in this process: exit status, stdout, stderr."""
    code = main(["node", "--print-config", *flags])
    out, err = capsys.readouterr()
    return code, out, err


def settings(output: str) -> dict[str, tuple[str, str]]:
    """--print-config's lines as {key: (value as written, where it came from)}."""
    found = {}
    for line in output.splitlines():
        if line.startswith("#"):
            continue
        key, _, rest = line.partition(" = ")
        value, _, origin = rest.rpartition("  # ")
        found[key] = (value, origin.partition("; ")[0])  # (after "; ": what the value means)
    return found


def write(path: Path, text: str) -> str:
    path.write_bytes(text.encode("utf-8", "surrogateescape"))  # (\udce9: the byte 0xe9)
    return str(path)


def test_flag_beats_environment_beats_file_beats_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write(
        tmp_path / "node.toml",
        'host = "127.0.0.2"\nport = 1111\nleafset = 8\nbootstrap = ["127.0.0.1:7000"]\n',
    )
    monkeypatch.setenv("UDPDHT_CONFIG", conf)
    monkeypatch.setenv("UDPDHT_PORT", "2222")
    monkeypatch.setenv("UDPDHT_LEAFSET", "10")
    monkeypatch.setenv("UDPDHT_NEW_RING", "yes")
    code, out, err = print_config(capsys, "--port", "3333")
    assert code == 0 and err == ""
    got = settings(out)
    assert got["port"] == ("3333", "flag")
    assert got["leafset"] == ("10", "env UDPDHT_LEAFSET")
    assert got["new-ring"] == ("true", "env UDPDHT_NEW_RING")
    assert got["host"] == ('"127.0.0.2"', f"config {conf}")
    assert got["bootstrap"] == ('["127.0.0.1:7000"]', f"config {conf}")
    assert got["replicas"] == ("3", "default")


def test_environment_lists_and_underscore_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write(tmp_path / "node.toml", 'data_dir = "/srv/udpdht"\nmax-store-bytes = "64M"\n')
    monkeypatch.setenv("UDPDHT_BOOTSTRAP", "127.0.0.1:7000, [::1]:7001 127.0.0.1:7002")
    code, out, _ = print_config(capsys, "--config", conf)
    assert code == 0
    got = settings(out)
    assert got["bootstrap"][0] == '["127.0.0.1:7000", "[::1]:7001", "127.0.0.1:7002"]'
    assert got["data-dir"] == ('"/srv/udpdht"', f"config {conf}")
    assert got["max-store-bytes"][0] == str(64 << 20)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot = 7000\n", "unknown key 'prot' (did you mean 'port'?)"),
        ("port = 99999\n", "port: port must be a number 0..65535, got '99999'"),
        ('log-level = "loud"\n', "log-level: must be one of debug, info, warning, error"),
        ('new-ring = "yes"\n', 'new-ring: expected true or false, not "yes"'),
        ("bootstrap = [7000]\n", "bootstrap: expected a list of strings, not a list"),
        ('bootstrap = "nonsense"\n', "bootstrap: bad address 'nonsense'"),
        ("port = \n", "not valid TOML"),
        ("# caf\udce9\nport = 7000\n", "not UTF-8 text (byte 5)"),  # (a helper's trial)
        ("\ufeff# caf\udce9\n", "not UTF-8 text (byte 8)"),  # (counted from the file's start)
        ("\udcff\udcfep\x00", "UTF-16 text: TOML is UTF-8; save it so"),  # (Windows' "Unicode")
    ],
)
def test_bad_file_is_one_line_naming_file_key_and_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    conf = write(tmp_path / "node.toml", text)
    code, out, err = print_config(capsys, "--config", conf)
    assert code == 2 and out == ""
    assert err.startswith(f"udpdht: error: {conf}: ") and message in err
    assert err.count("\n") == 1


def test_a_file_that_starts_with_a_byte_order_mark_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As Windows editors save UTF-8: tomllib refuses it ("Invalid statement (at line 1,
    # column 1)", which names nothing wrong).
    conf = write(tmp_path / "node.toml", "\ufeffreplicas = 2\n")
    code, out, err = print_config(capsys, "--config", conf)
    assert (code, err) == (0, "")
    assert settings(out)["replicas"] == ("2", f"config {conf}")


def test_missing_file_and_bad_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "absent.toml"
    code, _, err = print_config(capsys, "--config", str(absent))
    assert code == 2
    assert err == f"udpdht: error: cannot read config file {absent}: No such file or directory\n"
    monkeypatch.setenv("UDPDHT_REPLICAS", "0")
    code, _, err = print_config(capsys)
    assert code == 2
    assert err == (
        "udpdht: error: UDPDHT_REPLICAS: replicas must be a number 1..33, and at most L/2+1 "
        "for --leafset L (the default 16: 9), got 0\n"
    )


def test_unknown_variable_is_warned_about_and_loop_is_not(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UDPDHT_LOOP", "asyncio")  # udpdht.net's, not a node setting: fine
    monkeypatch.setenv("UDPDHT_NODE", "127.0.0.1:7000")  # the client commands': fine too
    monkeypatch.setenv("UDPDHT_PURE", "1")  # the compiled build's (udpdht/__init__.py): fine
    monkeypatch.setenv("UDPDHT_COMPILE", "1")  # an install's (setup.py): fine
    code, _, err = print_config(capsys)
    assert (code, err) == (0, "")
    monkeypatch.setenv("UDPDHT_PROT", "7001")
    code, out, err = print_config(capsys)
    assert code == 0 and settings(out)["port"] == ("7000", "default")
    assert "UDPDHT_PROT" in err and "did you mean 'UDPDHT_PORT'?" in err


def test_print_config_fed_back_gives_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    odd_dir = str(tmp_path / 'a "quoted" \\ dir')
    conf = write(tmp_path / "first.toml", 'replicas = 2\nlog-format = "json"\nnew-ring = true\n')
    monkeypatch.setenv("UDPDHT_BOOTSTRAP", "[::1]:7001,127.0.0.1:7002")
    monkeypatch.setenv("UDPDHT_MAX_STORE_BYTES", "1G")
    code, first, _ = print_config(
        capsys,
        "--config",
        conf,
        "--data-dir",
        odd_dir,
        "--port",
        "0",
        "--host",
        "::",
        "--advertise",
        "fd00::5",  # no port: the bound one, kept so in the file
    )
    assert code == 0
    again = write(tmp_path / "again.toml", first)
    for name in ("UDPDHT_BOOTSTRAP", "UDPDHT_MAX_STORE_BYTES"):
        monkeypatch.delenv(name)
    code, second, _ = print_config(capsys, "--config", again)
    assert code == 0
    assert tomllib.loads(second) == tomllib.loads(first)
    assert tomllib.loads(first)["data-dir"] == odd_dir
    assert tomllib.loads(first)["advertise"] == "fd00::5"  # port 0: the one bound at start
    assert {origin for _, origin in settings(second).values()} <= {f"config {again}", "default"}


def test_replicas_need_a_leafset_big_enough(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = print_config(capsys, "--leafset", "4", "--replicas", "5")
    assert (code, err) == (
        2,
        "udpdht: error: --replicas 5 needs --leafset 8 or more (--leafset 4 holds 3 replicas "
        "at most)\n",
    )


# --- client commands ---------------------------------------------------------------------------


def test_node_is_required_unless_udpdht_node_is_set() -> None:
    result = udpdht("get", "k", env={"UDPDHT_NODE": ""})
    assert result.returncode == 2
    assert result.stderr == "udpdht: error: --node H:P is required (or set UDPDHT_NODE)\n"
    with node_process() as node:
        put = udpdht("put", "greeting", "hello", env={"UDPDHT_NODE": node.addr_text})
        assert put.returncode == 0, put.stderr
        got = udpdht("get", "greeting", "--tries", "3", env={"UDPDHT_NODE": node.addr_text})
        assert (got.returncode, got.stdout) == (0, "hello\n")
        # --node wins over the variable: a bad variable is not even read.
        status = udpdht("status", "--node", node.addr_text, env={"UDPDHT_NODE": "nonsense"})
        assert status.returncode == 0, status.stderr


def test_timeout_ends_a_client_command_with_one_line(silent_port: int) -> None:
    started = time.monotonic()
    result = udpdht("status", "--node", f"127.0.0.1:{silent_port}", "--timeout", "2")
    took = time.monotonic() - started
    assert result.returncode == 1
    assert result.stderr == f"udpdht: error: 127.0.0.1:{silent_port} did not answer within 2 s\n"
    assert took < 6  # a bound, not a timing test: without --timeout it waits about 9 s


def test_tries_is_the_number_of_sends(silent_port: int) -> None:
    result = udpdht("get", "k", "--tries", "1", env={"UDPDHT_NODE": f"127.0.0.1:{silent_port}"})
    assert result.returncode == 1
    assert f"127.0.0.1:{silent_port} did not answer (1 try, " in result.stderr
    # The seconds said are those waited: the try's 0.3 s and the second that the check of
    # both protocols waits after it (it said 0.3 s after 1.7 s).
    said = re.search(r"1 try, (\d+\.\d) s\)", result.stderr)
    assert said is not None and float(said.group(1)) >= 1.0, result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--timeout", "0", "a timeout is a positive number of seconds, not 0"),
        ("--timeout", "soon", "expected a number of seconds, got 'soon'"),
        ("--tries", "0", "tries must be a number 1..100, got 0"),
    ],
)
def test_bad_timeout_or_tries_is_usage_error(flag: str, value: str, message: str) -> None:
    result = udpdht("status", "--node", "127.0.0.1:9", flag, value)
    assert result.returncode == 2 and message in result.stderr


# --- logs --------------------------------------------------------------------------------------


def test_json_log_lines_parse_and_say_where_the_data_is(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with node_process("--log-format", "json", "--data-dir", str(data)) as node:
        assert udpdht("status", "--node", node.addr_text).returncode == 0  # serving: signals too
        node.signal(signal.SIGINT)
        code, output = node.wait()
    assert code == 0, output
    records = [json.loads(line) for line in output.splitlines() if line.strip()]
    for record in records:
        assert {"time", "level", "node", "logger", "message"} <= record.keys()
        assert record["time"].endswith("Z") and record["time"][10] == "T"
    messages = [r["message"] for r in records]
    assert f"data: {data.resolve()}" in messages
    assert "stopped" in messages


def test_a_data_dir_moved_away_under_a_running_node_is_said_and_so_is_its_return(
    tmp_path: Path,
) -> None:
    # An operator's rm -rf went unnoticed: the node served on from files no longer on the disk,
    # and the next start found nothing. (Checked each store round: 2.5-7.5 s.)
    data, away = tmp_path / "data", tmp_path / "away"
    with node_process("--data-dir", str(data)) as node:

        def status_until(lost: bool) -> None:
            deadline = time.monotonic() + 20
            while True:
                shown = udpdht("status", "--node", node.addr_text)
                assert shown.returncode == 0, shown.stderr
                if (f"data dir     LOST: {data} was removed or moved" in shown.stdout) == lost:
                    return
                assert time.monotonic() < deadline, shown.stdout
                time.sleep(0.5)

        data.rename(away)
        status_until(lost=True)
        as_json = json.loads(udpdht("status", "--json", "--node", node.addr_text).stdout)
        assert as_json["data_dir_lost"] is True
        assert as_json["lost_path"] == str(data) and as_json["store_file_lost"] is False
        away.rename(data)  # (what the log line says to do)
        status_until(lost=False)
        node.signal(signal.SIGINT)
        code, output = node.wait()
    assert code == 0, output
    assert output.count(f"data dir {data} was removed or moved while this node runs") == 1
    assert output.count(f"data dir {data} is back") == 1
    assert "stopped with its data dir" not in output


def test_a_store_file_deleted_alone_under_a_running_node_is_said(tmp_path: Path) -> None:
    # The data dir's lock file was all the alarm looked at: `rm data/store.sqlite3` left the
    # node writing to a file no longer there, and its next start found an empty store.
    data = tmp_path / "data"
    store = data / "store.sqlite3"
    with node_process("--data-dir", str(data)) as node:
        store.unlink()
        deadline = time.monotonic() + 20
        while True:
            shown = udpdht("status", "--json", "--node", node.addr_text)
            if json.loads(shown.stdout)["data_dir_lost"] is True:
                break
            assert time.monotonic() < deadline, shown.stdout
            time.sleep(0.5)
        # Status names the file, not the dir (which is still there).
        as_json = json.loads(shown.stdout)
        assert as_json["lost_path"] == str(store) and as_json["store_file_lost"] is True
        shown = udpdht("status", "--node", node.addr_text)
        said = f"data dir     LOST: its store's file {store} was removed, moved or replaced"
        assert said in shown.stdout
        node.signal(signal.SIGINT)
        code, output = node.wait()
    assert code == 0, output
    assert output.count(f"the store's file {store} was removed, moved or replaced") == 1
    assert f"stopped with its store's file {store} lost: a start from {data} begins empty" in output


def test_a_node_stopped_with_its_data_dir_gone_says_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with node_process("--data-dir", str(data)) as node:
        shutil.rmtree(data)
        deadline = time.monotonic() + 20
        while (
            'data_dir_lost": true'
            not in udpdht("status", "--json", "--node", node.addr_text).stdout
        ):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        node.signal(signal.SIGINT)
        code, output = node.wait()
    assert code == 0, output
    assert f"stopped with its data dir {data} lost: a start from it begins empty" in output


def test_the_second_ctrl_c_line_is_a_log_object_under_log_format_json() -> None:
    # A node leaving towards a successor that does not answer (stopped) waits for it; a second
    # Ctrl-C ends it at once, and said so in the one plain line on a stderr of JSON lines.
    with (
        node_process("--log-format", "json") as first,
        node_process("--bootstrap", first.addr_text) as second,
    ):
        deadline = time.monotonic() + 20
        while '"settled": true' not in udpdht("status", "--json", "--node", first.addr_text).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert udpdht("put", "--node", first.addr_text, "k", "v").returncode == 0
        second.signal(signal.SIGSTOP)
        try:
            first.signal(signal.SIGINT)
            deadline = time.monotonic() + 10
            while "leaving" not in first.output():
                assert time.monotonic() < deadline, first.output()
                time.sleep(0.1)
            first.signal(signal.SIGINT)
            code, output = first.wait()
        finally:
            second.signal(signal.SIGCONT)
    assert code == 130, output
    last = json.loads(output.splitlines()[-1])
    assert last["level"] == "WARNING"
    assert last["message"].startswith("stopping now")
    # A memory node's cookie goes with it, this way too (it stayed: a new user's trial).
    assert not (default_data_dir(first.addr[1]) / COOKIE_FILE).exists()


def test_memory_only_node_says_so() -> None:
    with node_process() as node:  # --port 0 and no --data-dir: memory only
        assert udpdht("status", "--node", node.addr_text).returncode == 0
        node.signal(signal.SIGTERM)
        code, output = node.wait()
    assert code == 0, output
    assert "data: memory only\n" in output


def test_json_log_keeps_an_exception_as_a_string() -> None:
    from udpdht.cli_node import _JsonFormat

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("udpdht.x", logging.ERROR, "", 0, "failed", None, sys.exc_info())
    line = json.loads(_JsonFormat().format(record))
    assert line["message"] == "failed" and line["node"] is None
    assert "RuntimeError: boom" in line["exception"]


def test_print_config_shows_the_port_and_data_dir_the_node_would_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    code, out, _ = print_config(capsys, "--advertise", "127.0.0.1", "--port", "7005")
    assert code == 0
    found = settings(out)
    assert found["advertise"] == ('"127.0.0.1:7005"', "flag")  # not :0
    assert found["data-dir"] == (f'"{tmp_path}/udpdht/7005"', "default")
    assert tomllib.loads(out)["data-dir"] == f"{tmp_path}/udpdht/7005"
    code, out, _ = print_config(capsys, "--port", "0", "--advertise", "127.0.0.1")
    assert code == 0
    assert 'advertise = "127.0.0.1"  # flag; with the port bound at start (--port 0)' in out
    assert "# data-dir is not set: memory only (--port 0 and no data dir)  # default" in out
    code, out, _ = print_config(capsys)
    assert "# advertise is not set: peers reach it at 127.0.0.1:7000 (--host, --port)" in out


def test_node_help_states_the_defaults_in_plain_words(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["node", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "UDP port (default 7000; 0: any free port)" in text
    assert "default: $XDG_DATA_HOME/udpdht/PORT" in text
    assert "StoreFull" not in text and "refused ('store full')" in text


def test_an_unknown_variable_is_not_matched_on_the_prefix_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UDPDHT_BOGUS", "1")
    code, _, err = print_config(capsys)
    assert code == 0
    assert err == "udpdht: warning: ignoring UDPDHT_BOGUS: not a setting of udpdht node\n"


def test_a_relative_data_dir_in_a_file_is_beside_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # An operator's trial: data-dir = "reldata" in a config file went to the directory the
    # node was started from (/ under systemd). It is the file's neighbour; a flag's or a
    # variable's relative path is still the working directory's, as a shell's is.
    etc = tmp_path / "etc"
    etc.mkdir()
    conf = write(etc / "node.toml", 'data-dir = "reldata"\n')
    monkeypatch.chdir(tmp_path)
    code, out, _ = print_config(capsys, "--config", conf)
    assert code == 0
    assert settings(out)["data-dir"] == (f'"{etc / "reldata"}"', f"config {conf}")
    code, out, _ = print_config(capsys, "--config", "etc/node.toml")  # (a relative file)
    assert settings(out)["data-dir"][0] == f'"{etc / "reldata"}"'
    monkeypatch.setenv("UDPDHT_DATA_DIR", "here")
    code, out, _ = print_config(capsys, "--config", conf)
    # Printed absolute: read back from a file elsewhere, "here" would be the file's neighbour.
    assert settings(out)["data-dir"][0] == f'"{tmp_path / "here"}"'
