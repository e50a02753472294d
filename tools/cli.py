"""The ``confab`` command.

    confab serve [--listen HOST:PORT] [--data-dir DIR] [--store URL_OR_FILE] [--config FILE] [--shards N]
                 [--edges N]
                 [--metrics-listen HOST:PORT]
                 [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]
                 [--cluster NAME] [--cluster-ca FILE --cluster-cert FILE --cluster-key FILE]
                 [--cluster-insecure-plaintext]
    confab keys new --tenant T [--name NAME] [--role admin|agent]
    confab keys new --role operator [--name NAME]
    confab keys hash [KEY]      (without KEY, the key is read from stdin)
    confab cluster certs --out DIR [--cluster NAME] [--days N] HOST=ADDRESS...  (see tools/cluster_certs.py)
    confab price-service [--listen HOST:PORT] [--delay S] [--fail]
    confab flows validate PATH...  |  confab flows show NAME [--dir DIR ...] [--dot]
    confab flows test PATH... | confab flows replay --flow NAME --from STORE ...  (see tools/flows_cli.py)
    confab chat --target HOST:PORT --tenant T [--conversation ID] [--flow NAME] ...  (see tools/chat/)
    confab shell [--target HOST:PORT] [-c COMMAND] [--json] ...  (operator shell; see tools/shell/)
    confab console [--target HOST:PORT] [--tls-ca FILE] [--listen 127.0.0.1:8080]
                (web console over the Admin API; each person signs in with their key; see tools/console/)
    confab reload [--target HOST:PORT] [--api-key KEY | --token JWT] [--tls-ca FILE] [--json]
                (a running server loads its flow files again, as SIGHUP does; see tools/reload.py)
    confab call [--target HOST:PORT] [-H 'KEY: VALUE'] METHOD [JSON | -]  (any RPC, JSON in and out;
                see tools/call.py)  |  confab call --list

``serve`` prints one line once it is serving, with its pid. SIGTERM or SIGINT drains it: health
turns NOT_SERVING, in-flight calls finish (bounded by ``server.shutdown_grace_s``),
every actor process stops, and it exits 0. SIGHUP to that pid (or ``confab reload``) reloads
the flow files without dropping traffic (running conversations finish on the version they
started on).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml

from confab.runtime import VERSION
from confab.runtime.config import ConfigError, load_config
from confab.tools import call, cluster_certs, console, flows_cli, price_service, reload, shell
from confab.tools.chat import command_line as chat


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="confab", description="Confab conversation runtime")
    parser.add_argument("--version", action="version", version=f"confab {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--listen", metavar="HOST:PORT", help="address to serve on (default 127.0.0.1:50051)")
    serve.add_argument("--data-dir", metavar="DIR", help="where the SQLite store lives (default ./var)")
    serve.add_argument(
        "--store",
        metavar="URL_OR_FILE",
        help="store.path: a postgresql:// URL (a cluster's shared store) or an SQLite file under --data-dir",
    )
    serve.add_argument("--config", metavar="FILE", help="YAML file over the bundled defaults")
    serve.add_argument("--shards", type=int, metavar="N", help="shard processes (default: one per CPU)")
    serve.add_argument(
        "--edges",
        type=int,
        metavar="N",
        help="gRPC edge processes sharing the port (server.edges; default: 2/3 of the CPUs, at least 1)",
    )
    serve.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides logging.level"
    )
    serve.add_argument(
        "--advertise",
        metavar="ADDR",
        help="this host's address for the other hosts (cluster.advertise): be a member of the cluster"
        " that shares --store (PostgreSQL)",
    )
    serve.add_argument("--cluster", metavar="NAME", help="the cluster's name (cluster.name, default confab)")
    serve.add_argument("--host-id", metavar="NAME", help="this host's name in the cluster (cluster.host_id)")
    serve.add_argument("--cluster-ca", metavar="FILE", help="PEM: the cluster's CA (cluster.ca_file)")
    serve.add_argument(
        "--cluster-cert", metavar="FILE", help="PEM: this host's certificate from that CA (cluster.cert_file)"
    )
    serve.add_argument("--cluster-key", metavar="FILE", help="PEM: its private key (cluster.key_file)")
    serve.add_argument(
        "--cluster-insecure-plaintext",
        action="store_const",
        const=True,
        help="plain TCP between hosts: NOT authenticated (cluster.insecure_plaintext)",
    )
    serve.add_argument(
        "--metrics-listen", metavar="HOST:PORT", help="serve Prometheus metrics (telemetry.metrics_listen)"
    )
    serve.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain: serve TLS (tls.cert_file)")
    serve.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert (tls.key_file)")
    serve.add_argument(
        "--tls-client-ca", metavar="FILE", help="PEM CA: require client certificates it signed (mTLS)"
    )

    keys = commands.add_parser("keys", help="make API keys and their config entries")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    new_key = key_commands.add_parser("new", help="generate a key; print it and its auth.api_keys entry")
    new_key.add_argument("--tenant", help="the tenant the key acts for (an operator key may have none)")
    new_key.add_argument("--name", help="the key's name in config and logs (default: TENANT-<hash prefix>)")
    new_key.add_argument(
        "--role",
        action="append",
        default=[],
        help="a role (repeatable): admin (its tenant's Admin API), operator (every tenant, the cluster),"
        " agent (a person's messages into its tenant's handed-off conversations)",
    )
    hash_key = key_commands.add_parser("hash", help="print the SHA-256 that auth.api_keys stores for a key")
    hash_key.add_argument("key", nargs="?", help="the key; omit it (or '-') to read it from stdin")
    flows_cli.add_parser(commands)
    chat.add_parser(commands)
    shell.add_parser(commands)
    console.add_parser(commands)
    reload.add_parser(commands)
    call.add_parser(commands)
    cluster_certs.add_parser(commands)
    prices = commands.add_parser("price-service", help="run the pizza flow's local price webhook")
    prices.add_argument("--listen", default="127.0.0.1:8099")
    prices.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    prices.add_argument("--fail", action="store_true", help="answer 503 to every call")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "keys":
        return _keys(args)
    if args.command == "flows":
        return flows_cli.run(args)
    if args.command == "chat":
        return chat.run(args)
    if args.command == "shell":
        return shell.run(args)
    if args.command == "console":
        return console.run(args)
    if args.command == "reload":
        return reload.run(args)
    if args.command == "call":
        return call.run(args)
    if args.command == "cluster":
        return cluster_certs.run(args)
    if args.command == "price-service":
        return price_service.main(
            ["--listen", args.listen, "--delay", str(args.delay), *(["--fail"] if args.fail else [])]
        )
    parser.error(f"unknown command {args.command}")
    return 2


def _serve(args: argparse.Namespace) -> int:
    if args.shards is not None and args.shards < 1:
        print("confab: --shards must be at least 1", file=sys.stderr)
        return 2
    if args.edges is not None and args.edges < 1:
        print("confab: --edges must be at least 1", file=sys.stderr)
        return 2
    try:
        config = load_config(
            args.config,
            **{"server.listen": args.listen, "data_dir": args.data_dir, "engine.shards": args.shards},
            **{"server.edges": args.edges},
            **{"store.path": args.store},
            **{"telemetry.metrics_listen": args.metrics_listen},
            **{
                "cluster.advertise": args.advertise,
                "cluster.host_id": args.host_id,
            },
            **{
                "cluster.name": args.cluster,
                "cluster.ca_file": args.cluster_ca,
                "cluster.cert_file": args.cluster_cert,
                "cluster.key_file": args.cluster_key,
                "cluster.insecure_plaintext": args.cluster_insecure_plaintext,
            },
            **{
                "tls.cert_file": args.tls_cert,
                "tls.key_file": args.tls_key,
                "tls.client_ca_file": args.tls_client_ca,
            },
        )
    except ConfigError as exc:
        print(f"confab: {exc}", file=sys.stderr)
        return 2
    from confab.grpc_edge.access_log import configure_logging  # grpc is imported only when serving
    from confab.runtime import eventloop
    from confab.tools import serve
    from confab.tools.thespian_log import demote_thespian_chatter

    configure_logging(config.logging, args.log_level)
    demote_thespian_chatter()  # before any actor process is forked: they keep these handlers
    return eventloop.run(serve.run(config, log_level=args.log_level))


def _keys(args: argparse.Namespace) -> int:
    from confab.grpc_edge.auth import OPERATOR_ROLE, hash_api_key, new_api_key

    if args.keys_command == "hash":
        key = args.key if args.key not in (None, "-") else sys.stdin.readline().rstrip("\r\n")
        if not key:
            print("confab: no key given", file=sys.stderr)
            return 2
        print(hash_api_key(key))
        return 0
    operator = OPERATOR_ROLE in args.role
    if not args.tenant and not operator:
        print("confab: --tenant is required (only a key with --role operator may have none)", file=sys.stderr)
        return 2
    key = new_api_key()
    digest = hash_api_key(key)
    entry = {
        "name": args.name or f"{args.tenant or 'operator'}-{digest[:8]}",
        "sha256": digest,
        "tenant": args.tenant or "",
        "roles": list(args.role),
    }
    snippet = yaml.safe_dump({"auth": {"api_keys": [entry]}}, sort_keys=False, default_flow_style=False)
    owner = f"tenant {args.tenant!r}" if args.tenant else "an operator (no tenant)"
    print(f"# API key for {owner}; it is shown only now, the config keeps only its hash:")
    print(key)
    print("# Add this entry to auth.api_keys in your config file:")
    print(snippet, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
