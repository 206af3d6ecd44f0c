"""A real single-node Slurm cluster for tests: munged, MariaDB, slurmdbd, slurmctld and slurmd.

Everything lives under one directory (config, state, spool, logs, database); nothing under /etc
is written, except one ``127.0.0.1 <hostname -s>`` line in /etc/hosts when the short host name
does not resolve. Daemons and clients find the config through ``SLURM_CONF`` (Debian's Slurm 22.05
honours it everywhere: slurmctld, slurmd, slurmstepd, slurmdbd, which reads ``slurmdbd.conf`` next
to it, and all clients). munged listens on a private socket (``AuthInfo=socket=...``) with a
private key (sockets live in a short /tmp/xlt-slurm-sock-* directory, removed at stop); MariaDB
listens on 127.0.0.1 on a free port; the Slurm ports are free ports too, so
several clusters (xdist workers, colleagues) can run side by side.

Daemons run in the foreground (``-D``/``-F``) as children of this process; their PIDs are
recorded in ``<dir>/cluster.json`` and exactly those are stopped, after every job was cancelled.
Every wait has a timeout. Start-up takes a few seconds.

pytest::

    from tests.slurm_cluster import slurm_cluster  # noqa: F401  (or import it in conftest.py)

    def test_x(slurm_cluster):
        job = slurm_cluster.sbatch("--wrap", "true")
        slurm_cluster.wait_for(lambda: slurm_cluster.squeue_state(job) == "COMPLETED", 60)
        subprocess.run([...], env=slurm_cluster.env)  # SLURM_CONF for sbatch/squeue/submitit

Humans::

    python tests/slurm_cluster.py start --dir /tmp/slurm   # prints `export SLURM_CONF=...`
    python tests/slurm_cluster.py status --dir /tmp/slurm
    python tests/slurm_cluster.py stop --dir /tmp/slurm

Packages (Debian): see ``REQUIRED_PACKAGES``; ``bash scripts/install_slurm.sh`` installs them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal as _signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REQUIRED_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server")
INSTALL_SCRIPT = "scripts/install_slurm.sh"
APT_COMMAND = "apt-get update && apt-get install -y --no-install-recommends " + " ".join(REQUIRED_PACKAGES)
REQUIRED_BINARIES = (
    "munged", "munge", "unmunge", "mariadb-install-db", "mariadbd", "mariadb",
    "slurmdbd", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel",
    "sacct", "sacctmgr",
)  # fmt: skip
CLUSTER_NAME = "xlt"
PARTITION = "debug"
STATE_FILE = "cluster.json"
# Start order; stop runs in reverse.
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
# Small InnoDB files: ~26 MB per cluster instead of ~115 MB.
_INNODB_FILES = ("--innodb-log-file-size=8M", "--innodb-data-file-path=ibdata1:12M:autoextend")
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SlurmUnavailable(RuntimeError):
    """This machine cannot run the cluster (packages missing, not root, not Linux)."""


class SlurmStartError(RuntimeError):
    """A daemon did not come up in time; the message carries the tails of the logs."""


# ----------------------------------------------------------------------------- prerequisites


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + _SBIN_PATH)


def missing_packages() -> list[str]:
    """Debian packages from REQUIRED_PACKAGES that are not installed (all of them without dpkg)."""
    if _which("dpkg-query") is None:
        return list(REQUIRED_PACKAGES)
    missing = []
    for pkg in REQUIRED_PACKAGES:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Status}", pkg],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0 or proc.stdout.strip() != "installed":
            missing.append(pkg)
    return missing


def unavailable_reason() -> str | None:
    """Why the cluster cannot be started here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "the Slurm test cluster needs Linux"
    missing = missing_packages()
    if missing:
        return (
            f"Debian packages missing: {' '.join(missing)}; install them with "
            f"`bash {INSTALL_SCRIPT}` (runs: {APT_COMMAND})"
        )
    absent = [b for b in REQUIRED_BINARIES if _which(b) is None]
    if absent:
        return f"binaries not found on PATH: {' '.join(absent)}; run `bash {INSTALL_SCRIPT}`"
    if os.geteuid() != 0:
        return "the Slurm test cluster runs its daemons as root (SlurmUser=root); run as root"
    return None


# ----------------------------------------------------------------------------- small helpers


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.25,
    desc: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; TimeoutError after
    ``timeout`` seconds. Exceptions from the predicate propagate."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {desc}")
        time.sleep(interval)


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
            socks.append(s)
            if port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def _short_hostname() -> str:
    return socket.gethostname().split(".")[0]


def _ensure_hostname_resolves(host: str) -> None:
    try:
        socket.gethostbyname(host)
        return
    except OSError:
        pass
    # Slurm needs `hostname -s` to resolve (SlurmctldHost, NodeName). Idempotent: we only get
    # here when it does not resolve yet.
    print(f"[slurm_cluster] adding '127.0.0.1 {host}' to /etc/hosts", file=sys.stderr)
    with open("/etc/hosts", "a") as f:
        f.write(f"\n127.0.0.1 {host}  # added by tests/slurm_cluster.py\n")


def _proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot; None if it does not exist or is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _alive(pid: int, start_ticks: int | None) -> bool:
    ticks = _proc_start_ticks(pid)
    return ticks is not None and (start_ticks is None or ticks == start_ticks)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path}: missing)"
    return f"--- {path.name} ---\n" + "\n".join(text[-lines:])


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(_signal.SIGTERM))  # PR_SET_PDEATHSIG


def _node_hardware() -> dict[str, str]:
    """The node line from ``slurmd -C`` (CPUs, sockets, cores, threads, memory)."""
    hw: dict[str, str] = {}
    try:
        out = subprocess.run(
            [_which("slurmd") or "slurmd", "-C"], capture_output=True, text=True, timeout=20
        ).stdout
        line = next((ln for ln in out.splitlines() if ln.startswith("NodeName=")), "")
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            hw[key] = value
    except (OSError, subprocess.SubprocessError):
        pass
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
    hw = {k: v for k, v in hw.items() if k in keep}
    if "CPUs" not in hw:
        hw = {"CPUs": str(os.cpu_count() or 1)}
    mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    hw["RealMemory"] = str(max(256, int(mem_mb * 0.85)))
    return hw


# ----------------------------------------------------------------------------- the cluster


@dataclass
class _Daemon:
    name: str
    pid: int
    start_ticks: int | None
    popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)


class SlurmCluster:
    """A single-node Slurm cluster under ``root``. ``start()``, use, ``stop()``.

    Attributes used by tests: ``partition``, ``env`` (pass to every subprocess that talks to
    Slurm: SLURM_CONF, PATH with sbin, inherited SLURM_* job variables removed), ``conf``
    (slurm.conf path), ``node`` and ``root``.
    """

    def __init__(self, root: str | os.PathLike[str], partition: str = PARTITION) -> None:
        self.root = Path(root).resolve()
        self.partition = partition
        self.node = _short_hostname()
        self.conf = self.root / "etc" / "slurm.conf"
        self.daemons: list[_Daemon] = []
        self.sock_dir: Path | None = None  # /tmp/xlt-slurm-sock-*: see _write_config
        self.env = self._make_env()

    # -- environment and config ---------------------------------------------------------------

    def _make_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SUBMITIT_"))
        }
        env["SLURM_CONF"] = str(self.conf)
        env["XLT_SLURM_CLUSTER_DIR"] = str(self.root)  # marks processes of this cluster
        env["PATH"] = env.get("PATH", "") + ":" + _SBIN_PATH
        return env

    @property
    def _munge_socket(self) -> Path:
        assert self.sock_dir is not None
        return self.sock_dir / "munge.socket"

    def _write_config(self) -> None:
        r = self.root
        for sub in ("etc", "run", "log", "state", f"spool/{self.node}", "munge", "db"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        # Sockets go to a short directory under /tmp: munged wants every directory above its
        # socket traversable by all (a --dir under /root is not), and unix socket paths are short.
        self._remove_sock_dir()
        self.sock_dir = Path(tempfile.mkdtemp(prefix="xlt-slurm-sock-", dir="/tmp"))
        self.sock_dir.chmod(0o755)
        (r / "munge").chmod(0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)

        slurmctld_port, slurmd_port, dbd_port, db_port = _free_ports(4)
        self.db_port = db_port
        hw = " ".join(f"{k}={v}" for k, v in _node_hardware().items())
        auth_info = f"socket={self._munge_socket}"
        self.conf.write_text(
            f"""# written by tests/slurm_cluster.py
ClusterName={CLUSTER_NAME}
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={slurmctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo={auth_info}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
AccountingStoragePass={self._munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
KillWait=5
InactiveLimit=0
MinJobAge=300
NodeName={self.node} NodeAddr=127.0.0.1 {hw} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )
        dbd_conf = self.conf.parent / "slurmdbd.conf"  # found next to $SLURM_CONF
        dbd_conf.write_text(
            f"""# written by tests/slurm_cluster.py
AuthType=auth/munge
AuthInfo={auth_info}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
PidFile={r}/run/slurmdbd.pid
LogFile={r}/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=slurm_acct_db
"""
        )
        dbd_conf.chmod(0o600)  # slurmdbd refuses a world-readable config

    # -- process control ------------------------------------------------------------------------

    def _spawn(self, name: str, argv: Sequence[str], detach: bool) -> _Daemon:
        log = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115 (owned by the child)
        try:
            popen = subprocess.Popen(
                list(argv),
                env=self.env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the tests, not these
                preexec_fn=None if detach else _set_pdeathsig,
            )
        finally:
            log.close()
        daemon = _Daemon(name, popen.pid, _proc_start_ticks(popen.pid), popen)
        self.daemons.append(daemon)
        self._save_state()
        return daemon

    def _save_state(self) -> None:
        state = {
            "conf": str(self.conf),
            "partition": self.partition,
            "node": self.node,
            "sock_dir": str(self.sock_dir) if self.sock_dir else None,
            "daemons": [{"name": d.name, "pid": d.pid, "start_ticks": d.start_ticks} for d in self.daemons],
        }
        tmp = self.root / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.root / STATE_FILE)

    @classmethod
    def attach(cls, root: str | os.PathLike[str]) -> SlurmCluster:
        """The cluster recorded in ``<root>/cluster.json`` (started by another process)."""
        state = json.loads((Path(root) / STATE_FILE).read_text())
        cluster = cls(root, partition=state["partition"])
        cluster.sock_dir = Path(state["sock_dir"]) if state.get("sock_dir") else None
        cluster.daemons = [_Daemon(d["name"], d["pid"], d["start_ticks"]) for d in state["daemons"]]
        return cluster

    def _check_daemons(self) -> None:
        for d in self.daemons:
            if not _alive(d.pid, d.start_ticks):
                raise SlurmStartError(f"{d.name} (pid {d.pid}) exited\n{self.log_tails()}")

    def log_tails(self, lines: int = 15) -> str:
        logs = sorted((self.root / "log").glob("*"))
        return "\n".join(_tail(p, lines) for p in logs)

    def _wait(self, predicate: Callable[[], Any], timeout: float, desc: str) -> Any:
        def check() -> Any:
            self._check_daemons()
            return predicate()

        try:
            return wait_for(check, timeout, interval=0.1, desc=desc)
        except TimeoutError as e:
            raise SlurmStartError(f"{e}\n{self.log_tails()}") from None

    def _ok(self, argv: Sequence[str], timeout: float = 10) -> bool:
        try:
            return self.run(argv, timeout=timeout, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self, timeout: float = 90, detach: bool = False) -> SlurmCluster:
        """Start all daemons and wait until the node is idle. ``detach=False`` (pytest) makes the
        daemons die with this process; the CLI uses ``detach=True``."""
        reason = unavailable_reason()
        if reason:
            raise SlurmUnavailable(reason)
        if (self.root / STATE_FILE).exists():
            old = SlurmCluster.attach(self.root)
            if any(_alive(d.pid, d.start_ticks) for d in old.daemons):
                raise SlurmStartError(f"a cluster is already running in {self.root}; stop it first")
        _ensure_hostname_resolves(self.node)
        self._write_config()
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        r = self.root
        try:
            sock = str(self._munge_socket)
            self._spawn(
                "munged",
                [
                    _which("munged") or "munged", "-F", f"--socket={sock}",
                    f"--key-file={r}/munge/munge.key", f"--pid-file={r}/run/munged.pid",
                    f"--seed-file={r}/munge/munged.seed", f"--log-file={r}/log/munged.log",
                ],
                detach,
            )  # fmt: skip
            self._wait(
                lambda: (
                    self._munge_socket.exists()
                    and self._ok(["bash", "-c", f"munge -n -S {sock} | unmunge -S {sock}"])
                ),
                left(),
                "munged",
            )

            datadir = r / "db" / "data"
            self.run(
                [
                    "mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=root",
                    "--auth-root-authentication-method=normal", "--skip-test-db",
                    "--skip-name-resolve", *_INNODB_FILES,
                ],
                timeout=left(),
                check=True,
            )  # fmt: skip
            self._spawn(
                "mariadbd",
                [
                    _which("mariadbd") or "mariadbd", "--no-defaults", f"--datadir={datadir}",
                    f"--socket={self.sock_dir}/mysqld.sock", f"--port={self.db_port}",
                    "--bind-address=127.0.0.1", f"--pid-file={r}/run/mariadbd.pid",
                    f"--log-error={r}/log/mariadbd.log", "--user=root", "--skip-log-bin",
                    "--skip-name-resolve", *_INNODB_FILES, "--innodb-buffer-pool-size=64M",
                    "--innodb-flush-log-at-trx-commit=0",
                    "--innodb-lock-wait-timeout=900", "--max-allowed-packet=64M",
                ],
                detach,
            )  # fmt: skip
            self._wait(
                lambda: self._ok(["mariadb", "-h127.0.0.1", f"-P{self.db_port}", "-uroot", "-e", "SELECT 1"]),
                left(),
                "mariadbd",
            )

            self._spawn("slurmdbd", [_which("slurmdbd") or "slurmdbd", "-D"], detach)
            # Registers the cluster (and the root account/user); retried until slurmdbd answers.
            self._wait(
                lambda: (
                    self._ok(["sacctmgr", "-i", "add", "cluster", CLUSTER_NAME])
                    or CLUSTER_NAME
                    in self._out(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"]).split()
                ),
                left(),
                "slurmdbd (sacctmgr add cluster)",
            )

            self._spawn("slurmctld", [_which("slurmctld") or "slurmctld", "-D", "-c"], detach)
            self._spawn("slurmd", [_which("slurmd") or "slurmd", "-D"], detach)
            self._wait(self._node_idle, left(), f"node {self.node} idle in sinfo")
        except BaseException:
            self.stop()
            raise
        return self

    def _out(self, argv: Sequence[str], timeout: float = 10) -> str:
        try:
            return self.run(argv, timeout=timeout, check=False).stdout
        except subprocess.TimeoutExpired:
            return ""

    def _node_idle(self) -> bool:
        return self._out(["sinfo", "-h", "-N", "-n", self.node, "-o", "%T"]).strip() == "idle"

    def stop(self, timeout: float = 30) -> None:
        """Cancel all jobs, stop exactly the recorded daemons (SIGTERM, then SIGKILL) and any
        leftover job process of this cluster. Safe to call twice."""
        ctld = next((d for d in self.daemons if d.name == "slurmctld"), None)
        if ctld is not None and _alive(ctld.pid, ctld.start_ticks):
            try:
                self.cancel_all(timeout=max(10, timeout / 2))
            except (TimeoutError, subprocess.SubprocessError, OSError) as e:
                print(f"[slurm_cluster] {e}; killing daemons anyway", file=sys.stderr)
        for d in reversed(self.daemons):
            self._terminate(d.name, d.pid, d.start_ticks, d.popen)
        leftovers = {pid: _proc_start_ticks(pid) for pid in self._leftover_pids()}
        if leftovers:
            print(f"[slurm_cluster] killing leftover job processes {sorted(leftovers)}", file=sys.stderr)
        for sig in (_signal.SIGTERM, _signal.SIGKILL):
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            with contextlib.suppress(TimeoutError):
                wait_for(
                    lambda left=leftovers: not any(_alive(p, t) for p, t in left.items()),
                    5,
                    interval=0.05,
                    desc="leftover job processes to exit",
                )
            leftovers = {p: t for p, t in leftovers.items() if _alive(p, t)}
            if not leftovers:
                break
        self._remove_sock_dir()
        if (self.root / STATE_FILE).exists():
            self._save_state()

    def _remove_sock_dir(self) -> None:
        if self.sock_dir is not None and self.sock_dir.name.startswith("xlt-slurm-sock-"):
            shutil.rmtree(self.sock_dir, ignore_errors=True)

    @staticmethod
    def _terminate(name: str, pid: int, start_ticks: int | None, popen: subprocess.Popen | None) -> None:
        if not _alive(pid, start_ticks):
            if popen is not None:
                popen.poll()
            return
        for sig, grace in ((_signal.SIGTERM, 15.0), (_signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            try:
                wait_for(
                    lambda: not _alive(pid, start_ticks) or (popen and popen.poll() is not None),
                    grace,
                    interval=0.05,
                    desc=f"{name} (pid {pid}) to exit",
                )
                break
            except TimeoutError:
                print(f"[slurm_cluster] {name} ignored {sig.name}", file=sys.stderr)
        if popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=1)  # reap it

    def _leftover_pids(self) -> list[int]:
        """Processes started by this cluster's daemons (slurmstepd, job scripts) that survived."""
        mine = {os.getpid()}
        pid = os.getpid()
        while pid > 1:  # never our own ancestors (they may carry the marker too)
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                pid = int(stat[stat.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError):
                break
            mine.add(pid)
        marker = f"XLT_SLURM_CLUSTER_DIR={self.root}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in mine:
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0") and _proc_start_ticks(int(entry.name)) is not None:
                found.append(int(entry.name))
        return found

    # -- helpers for tests ----------------------------------------------------------------------

    def run(
        self, argv: Sequence[str], timeout: float = 30, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command with this cluster's env; raises on timeout (and on failure if check)."""
        proc = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sbatch(self, *args: str, timeout: float = 30) -> str:
        """``sbatch --parsable <args>``; returns the job id."""
        out = self.run(["sbatch", "--parsable", f"--partition={self.partition}", *args], timeout)
        return out.stdout.strip().split(";")[0]

    def squeue_state(self, job_id: str) -> str | None:
        """State of a job or array task (``123`` or ``123_0``): from squeue while it is known
        there, else from sacct (COMPLETED, FAILED, CANCELLED, ...); None if neither knows it."""
        state = self._out(["squeue", "-h", "-j", str(job_id), "-o", "%T"]).strip()
        if state:
            return state.splitlines()[0]
        out = self._out(["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "JobID,State"])
        for line in out.splitlines():
            jid, _, st = line.partition("|")
            if jid == str(job_id) and st:
                return st.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
        return None

    def squeue_reason(self, job_id: str) -> str | None:
        out = self._out(["squeue", "-h", "-j", str(job_id), "-o", "%r"]).strip()
        return out.splitlines()[0] if out else None

    @staticmethod
    def wait_for(
        predicate: Callable[[], T], timeout: float, interval: float = 0.25, desc: str = "condition"
    ) -> T:
        """Poll until ``predicate()`` is truthy (returned) or raise TimeoutError."""
        return wait_for(predicate, timeout, interval=interval, desc=desc)

    def release_begin_time(self, job_id: str, delay_s: int = 2) -> bool:
        """Start a requeued job within ``delay_s`` seconds instead of after Slurm's ~121 s hold
        (cred_expire + 1): when the job is PENDING with reason BeginTime,
        ``scontrol update JobId=<id> StartTime=now+<delay_s>``. True if it was released.

        Why not ``StartTime=now``: slurmd revoked the killed run's credential at a one-second
        resolution, and a relaunch credential created in that same second is refused ("Job
        credential revoked"): the job then ends FAILED instead of running again. A delay of at
        least 2 s is safe (checked on Debian's Slurm 22.05)."""
        if self.squeue_state(job_id) != "PENDING" or self.squeue_reason(job_id) != "BeginTime":
            return False
        start = f"StartTime=now+{int(delay_s)}" if delay_s > 0 else "StartTime=now"
        proc = self.run(["scontrol", "update", f"JobId={job_id}", start], check=False)
        return proc.returncode == 0

    def signal(self, job_id: str, sig: str = "USR2", batch: bool = False) -> None:
        """``scancel --signal=<sig> <id>``: reaches the job steps (submitit's srun worker);
        ``batch=True`` signals the batch shell instead."""
        argv = ["scancel", f"--signal={sig}", *(["--batch"] if batch else []), str(job_id)]
        self.run(argv)

    def cancel_all(self, timeout: float = 30) -> None:
        """Cancel every job of the partition and wait (bounded) until squeue is empty."""
        self.run(["scancel", f"--partition={self.partition}"], timeout=10, check=False)
        wait_for(lambda: not self.job_ids(), timeout, desc="all jobs to end")

    def job_ids(self) -> list[str]:
        """Ids (``%i``: ``123`` or ``123_4``) of the jobs squeue shows now."""
        return self._out(["squeue", "-h", "-o", "%i"]).split()

    def status(self) -> str:
        lines = [f"SLURM_CONF={self.conf}  (dir {self.root})"]
        for d in self.daemons:
            state = "running" if _alive(d.pid, d.start_ticks) else "gone"
            lines.append(f"  {d.name:<10} pid {d.pid:<8} {state}")
        if any(_alive(d.pid, d.start_ticks) for d in self.daemons if d.name == "slurmctld"):
            lines.append(self._out(["sinfo"]).rstrip())
            lines.append(self._out(["squeue"]).rstrip())
        return "\n".join(lines)


# ----------------------------------------------------------------------------- pytest fixture

try:
    import pytest
except ImportError:  # the CLI works without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def slurm_cluster(request: pytest.FixtureRequest) -> Iterator[SlurmCluster]:
        """A started single-node cluster for the whole session; skips when Slurm is missing.

        Its directory (config, logs, database) is under /tmp/xlt-slurm-*, removed at the end
        unless XLT_SLURM_KEEP=1.

        The cluster is kept on ``request.config`` so that importing this fixture in several
        places (conftest.py and a test module, or under two module names) still starts one.
        """
        cluster = getattr(request.config, "_xlt_slurm_cluster", None)
        if cluster is None:
            reason = unavailable_reason()
            if reason:
                if os.environ.get("XLT_REQUIRE_SLURM"):  # CI: a skipped scheduler test is a failure
                    pytest.fail(f"XLT_REQUIRE_SLURM is set but {reason}")
                pytest.skip(reason)
            root = tempfile.mkdtemp(prefix="xlt-slurm-", dir="/tmp")  # short: socket paths
            cluster = SlurmCluster(root)
            t0 = time.monotonic()
            cluster.start()
            print(f"\n[slurm_cluster] up in {time.monotonic() - t0:.1f}s at {root}")
            request.config._xlt_slurm_cluster = cluster  # type: ignore[attr-defined]

            def stop() -> None:
                cluster.stop()
                if os.environ.get("XLT_SLURM_KEEP"):
                    print(f"[slurm_cluster] kept {root} (XLT_SLURM_KEEP)", file=sys.stderr)
                else:
                    shutil.rmtree(root, ignore_errors=True)

            request.config.add_cleanup(stop)
        yield cluster


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("start", "stop", "status", "check"))
    parser.add_argument("--dir", help="cluster directory (start: created if missing)")
    parser.add_argument("--timeout", type=float, default=90)
    args = parser.parse_args(argv)

    if args.command == "check":
        reason = unavailable_reason()
        print(reason or "ok: all packages installed")
        return 1 if reason else 0
    if not args.dir:
        parser.error("--dir is required")
    root = Path(args.dir)
    if args.command == "start":
        root.mkdir(parents=True, exist_ok=True)
        try:
            t0 = time.monotonic()
            cluster = SlurmCluster(root).start(timeout=args.timeout, detach=True)
        except (SlurmUnavailable, SlurmStartError) as e:
            print(f"cannot start: {e}", file=sys.stderr)
            return 2
        print(f"up in {time.monotonic() - t0:.1f}s\n{cluster.status()}")
        print(f"\nexport SLURM_CONF={cluster.conf}")
        return 0
    if not (root / STATE_FILE).exists():
        print(f"no cluster recorded in {root}", file=sys.stderr)
        return 1
    cluster = SlurmCluster.attach(root)
    if args.command == "status":
        print(cluster.status())
    else:
        cluster.stop()
        print(f"stopped\n{cluster.status()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
