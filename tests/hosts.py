"""Several hosts on one machine: Linux network namespaces joined by a bridge of this run's own.

Each host is a network namespace with one veth pair: its end (``eth0``) inside the
namespace carries the host's address, the other end is a port of the bridge in the
root namespace. The root namespace has an address on the bridge too, so it reaches
every host directly, and a host reaches the root (e.g. a PostgreSQL listening on
:attr:`Hosts.bridge_address`). Nothing is routed beyond the bridge's /24.

Names and the subnet are chosen at random per run, checked against what exists, under
a lock shared by every run on the machine, so two runs never collide; everything
created is recorded as it is created, and :meth:`Hosts.close` removes exactly that and
then checks that nothing of the run is left (namespace, link or process).

A process belongs to a host when its network namespace is the host's, which is what
``ip netns pids`` reports: it finds every process of a server, including the ones
Thespian daemonizes into sessions of their own, which a process-group kill misses.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

NETNS_DIR = Path("/run/netns")
# Serializes choosing names and a subnet and claiming them, between runs on one machine.
LOCK_PATH = Path("/run/lock/confab-test-hosts.lock")
# 8192 /24s to draw from, clear of the 10.231 and 10.232 of hand-made setups.
SUBNET_POOL = ipaddress.IPv4Network("10.160.0.0/11")
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21  # `ip netns add` mounts the namespace's file
HOST_INTERFACE = "eth0"
CONNECT_PROBE = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])).close()\n"
    "except OSError:\n"
    "    sys.exit(1)\n"
)


class HostsError(RuntimeError):
    """Setting up or tearing down the hosts failed, or left something of the run behind."""


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    capabilities = _effective_capabilities()
    for name, bit in (("CAP_NET_ADMIN", CAP_NET_ADMIN), ("CAP_SYS_ADMIN", CAP_SYS_ADMIN)):
        if not capabilities >> bit & 1:
            return f"this process lacks {name}"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    return None


def _effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise HostsError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def link_names() -> set[str]:
    return {link["ifname"] for link in json.loads(_ip("-j", "link", "show") or "[]")}


def namespace_names() -> set[str]:
    return set(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else set()


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the root namespace has an address in or a route to (the default aside)."""
    networks = []
    for route in json.loads(_ip("-j", "-4", "route", "show", "table", "all") or "[]"):
        if route.get("dst", "default") != "default":
            networks.append(ipaddress.IPv4Network(route["dst"], strict=False))
    for link in json.loads(_ip("-j", "-4", "addr", "show") or "[]"):
        for address in link.get("addr_info", []):
            networks.append(ipaddress.IPv4Network(f"{address['local']}/{address['prefixlen']}", strict=False))
    return networks


def random_subnet() -> ipaddress.IPv4Network:
    """A /24 of :data:`SUBNET_POOL`."""
    offset = secrets.randbelow(SUBNET_POOL.num_addresses // 256) * 256
    return ipaddress.IPv4Network((int(SUBNET_POOL.network_address) + offset, 24))


def _namespace_of(pid: int) -> tuple[int, int] | None:
    """(device, inode) of a process's network namespace; None if it is gone or a zombie."""
    try:
        info = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return info.st_dev, info.st_ino


def processes_in(namespace: tuple[int, int]) -> list[int]:
    """Every live process in a network namespace (what ``ip netns pids`` lists), even one deleted."""
    return sorted(
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit() and _namespace_of(int(entry)) == namespace
    )


@dataclass
class _Host:
    namespace: str
    veth: str
    address: str
    identity: tuple[int, int] = (0, 0)  # the namespace's (device, inode), once it exists
    spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)


class Hosts:
    """``count`` hosts, numbered from 0, each in a network namespace of its own, on one bridge.

    Use as a context manager: entering creates everything, leaving removes it all,
    whatever happened in between, and raises :class:`HostsError` if anything of the run
    could not be removed.
    """

    def __init__(self, count: int) -> None:
        if not 1 <= count <= 200:
            raise ValueError(f"between 1 and 200 hosts, not {count}")
        self.count = count
        self.token = ""
        self.bridge = ""
        self.subnet = ipaddress.IPv4Network("0.0.0.0/32")
        self._hosts: list[_Host] = []
        self._created_links: list[str] = []
        self._created_namespaces: list[str] = []
        self._closed = False

    # Setting up ---------------------------------------------------------------------------

    def __enter__(self) -> Hosts:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _create(self) -> None:
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        with LOCK_PATH.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            self._claim_names_and_subnet()
        for host in self._hosts:
            self._create_host(host)

    def _claim_names_and_subnet(self) -> None:
        """Pick names and a /24 nobody uses and create the bridge with its address, so later runs see them."""
        links, namespaces, networks = link_names(), namespace_names(), _networks_in_use()
        for _ in range(100):
            token = secrets.token_hex(3)[:5]
            names = {f"cfb{token}", *(f"cfv{token}{i}" for i in range(self.count))}
            hosts = {f"cfh{token}-{i}" for i in range(self.count)}
            subnet = random_subnet()
            if names & links or hosts & namespaces or any(subnet.overlaps(n) for n in networks):
                continue
            self.token, self.bridge, self.subnet = token, f"cfb{token}", subnet
            self._hosts = [
                _Host(f"cfh{token}-{i}", f"cfv{token}{i}", str(subnet.network_address + 2 + i))
                for i in range(self.count)
            ]
            _ip("link", "add", self.bridge, "type", "bridge")
            self._created_links.append(self.bridge)
            _ip("addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            return
        raise HostsError("found no free names and subnet in 100 tries")

    def _create_host(self, host: _Host) -> None:
        _ip("netns", "add", host.namespace)
        self._created_namespaces.append(host.namespace)
        info = os.stat(NETNS_DIR / host.namespace)
        host.identity = (info.st_dev, info.st_ino)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", HOST_INTERFACE, "netns", host.namespace)
        self._created_links.append(host.veth)
        _ip("link", "set", host.veth, "master", self.bridge, "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", HOST_INTERFACE)
        _ip("-n", host.namespace, "link", "set", HOST_INTERFACE, "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")

    # Where things are ---------------------------------------------------------------------

    @property
    def bridge_address(self) -> str:
        """The root namespace's address on the bridge (where a store shared by the hosts listens)."""
        return str(self.subnet.network_address + 1)

    def address(self, i: int) -> str:
        return self._host(i).address

    def namespace(self, i: int) -> str:
        return self._host(i).namespace

    def veth(self, i: int) -> str:
        """The root namespace's end of host ``i``'s link (the bridge port :meth:`cut` takes down)."""
        return self._host(i).veth

    def _host(self, i: int) -> _Host:
        if not 0 <= i < len(self._hosts):
            raise IndexError(f"no host {i}: there are {len(self._hosts)}")
        return self._hosts[i]

    # Processes ----------------------------------------------------------------------------

    def spawn(
        self,
        i: int,
        argv: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,  # over os.environ
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on host ``i``, its stdout and stderr appended to ``log``, stdin empty.

        A file, never a pipe: Thespian's admin daemonizes with the starter's stdout, so a
        pipe would never see EOF, and one nobody reads blocks its writer once full.
        """
        host = self._host(i)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as output:
            process = subprocess.Popen(
                ["ip", "netns", "exec", host.namespace, *argv],  # ip execs argv: the pid is argv's
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,  # a Ctrl-C meant for the test does not reach the host
            )
        host.spawned.append(process)
        return process

    def run(self, i: int, argv: Sequence[str], *, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a short command on host ``i`` and return its output (check it yourself)."""
        return subprocess.run(
            ["ip", "netns", "exec", self._host(i).namespace, *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def pids(self, i: int) -> list[int]:
        """Every live process on host ``i``, whoever started it."""
        return processes_in(self._host(i).identity)

    def terminate(self, i: int) -> list[subprocess.Popen[bytes]]:
        """SIGTERM to each process :meth:`spawn` started on host ``i`` that still runs (not its children)."""
        running = [p for p in self._host(i).spawned if p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        return running

    def kill(self, i: int, timeout: float = 10.0) -> list[int]:
        """SIGKILL every process on host ``i`` until none is left; return the pids killed.

        Rounds repeat because a process may fork between the listing and its kill.
        """
        host = self._host(i)
        killed: list[int] = []
        deadline = time.monotonic() + timeout
        while pids := processes_in(host.identity):
            if time.monotonic() > deadline:
                raise HostsError(f"host {i} still has processes {pids} after {timeout:.0f}s of SIGKILL")
            for pid in pids:
                if _kill_in_namespace(pid, host.identity):
                    killed.append(pid)
            time.sleep(0.01)
        for process in host.spawned:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))  # reap: no zombie of ours stays
        return sorted(set(killed))

    def listening(self, i: int) -> list[tuple[str, int]]:
        """Every TCP listener on host ``i``, as (address, port); ``*`` or ``0.0.0.0`` is every interface."""
        listed = self.run(i, ["ss", "-Hltn"])
        if listed.returncode != 0:
            raise HostsError(f"ss on host {i}: {listed.stderr.strip()}")
        sockets = []
        for line in listed.stdout.splitlines():
            address, port = line.split()[3].rsplit(":", 1)
            address = address.strip("[]").removeprefix("::ffff:")  # gRPC listens IPv4-mapped
            sockets.append((address, int(port)))
        return sockets

    # The network --------------------------------------------------------------------------

    def cut(self, i: int) -> None:
        """Take host ``i``'s bridge port down: its processes run on but reach nothing, and nothing them."""
        _ip("link", "set", self._host(i).veth, "down")

    def heal(self, i: int) -> None:
        _ip("link", "set", self._host(i).veth, "up")

    def isolate(self, i: int) -> None:
        """Cut host ``i`` off from the other hosts only: it still reaches the bridge's address
        (a store there) and the root namespace reaches it. Its packets to the others go to a
        blackhole route, so no connection between them opens and open ones stall."""
        for j in range(self.count):
            if j != i:
                _ip("-n", self._host(i).namespace, "route", "add", "blackhole", f"{self._host(j).address}/32")

    def rejoin(self, i: int) -> None:
        """Undo :meth:`isolate`."""
        for j in range(self.count):
            if j != i:
                _ip("-n", self._host(i).namespace, "route", "del", "blackhole", f"{self._host(j).address}/32")

    def can_connect(self, i: int | None, address: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection to ``address:port`` from host ``i`` (None: the root namespace) opens."""
        argv = [sys.executable, "-c", CONNECT_PROBE, address, str(port), str(timeout)]
        if i is not None:
            argv = ["ip", "netns", "exec", self._host(i).namespace, *argv]
        probe = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        return probe.returncode == 0

    def wait_connectable(
        self, i: int | None, address: str, port: int, *, expected: bool = True, timeout: float = 10.0
    ) -> bool:
        """Whether :meth:`can_connect` gave ``expected`` within ``timeout`` (a bridge port needs a moment)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.can_connect(i, address, port, timeout=0.5) == expected:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    # Tearing down -------------------------------------------------------------------------

    def leftovers(self) -> list[str]:
        """What of this run still exists: namespaces, links and processes."""
        left = [f"namespace {n}" for n in sorted(set(self._created_namespaces) & namespace_names())]
        left += [f"link {n}" for n in sorted(set(self._created_links) & link_names())]
        for host in self._hosts:
            if host.identity != (0, 0):
                left += [f"process {pid} on {host.namespace}" for pid in processes_in(host.identity)]
        return left

    def close(self) -> None:
        """Kill every process on every host, delete namespaces, veths and bridge, and check none is left."""
        if self._closed:
            return
        self._closed = True
        problems: list[str] = []
        for i, host in enumerate(self._hosts):
            if host.identity != (0, 0):
                try:
                    self.kill(i)
                except HostsError as error:
                    problems.append(str(error))
        # A veth goes with its namespace, but only once the namespace is freed: delete it first.
        veths = [name for name in self._created_links if name != self.bridge]
        bridges = [name for name in self._created_links if name == self.bridge]
        for command, names, existing in (
            (("link", "del"), veths, link_names),
            (("netns", "del"), self._created_namespaces, namespace_names),
            (("link", "del"), bridges, link_names),
        ):
            for name in sorted(set(names) & existing()):
                try:
                    _ip(*command, name)
                except HostsError as error:
                    problems.append(str(error))
        left = self.leftovers()
        if problems or left:
            raise HostsError("the hosts were not all removed: " + "; ".join(problems + left))


def _kill_in_namespace(pid: int, namespace: tuple[int, int]) -> bool:
    """SIGKILL ``pid`` if it is still the process in ``namespace`` (through a pidfd: no reused pid is hit)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False  # already gone
    try:
        if _namespace_of(pid) != namespace:
            return False
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)
