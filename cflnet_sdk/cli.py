"""The ``cflnet`` command line. Heavy libraries load inside each command, never at start-up."""

from __future__ import annotations

import sys

import typer

from cflnet_sdk import __version__
from cflnet_sdk.commands import (
    average,
    benchmark,
    calibrate,
    data,
    demo,
    evaluate,
    official,
    predict,
    serve,
    synth,
    train,
    variants,
)
from cflnet_sdk.errors import CFLNetError


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"cflnet-sdk {__version__}")
        raise typer.Exit()


def make_app(name: str, help: str) -> typer.Typer:
    """A typer app with the options every cflnet command line shares (``--version``)."""
    application = typer.Typer(name=name, help=help, no_args_is_help=True,
                              pretty_exceptions_enable=False)

    @application.callback()
    def _root(
        version: bool = typer.Option(False, "--version", callback=_show_version,
                                     is_eager=True, help="Print the version and exit."),
    ) -> None:
        pass

    _root.__doc__ = help
    return application


app = make_app("cflnet", "CFL-Net image forgery localization: train, evaluate, predict and "
               "benchmark.")

app.command("import-official")(official.import_official)
app.command("predict")(predict.predict)
app.command("benchmark")(benchmark.benchmark)
app.command("synth")(synth.synth)
app.command("train")(train.train)
app.command("evaluate")(evaluate.evaluate)
app.command("demo")(demo.demo)
app.command("serve")(serve.serve)
app.command("variants")(variants.variants)
app.command("average")(average.average)
app.command("calibrate")(calibrate.calibrate)
app.add_typer(data.app, name="data")


def run(application: typer.Typer) -> None:
    """Run a typer app, turning ``CFLNetError`` into a one-line message and exit status 2."""
    try:
        application(standalone_mode=True)
    except CFLNetError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


def main() -> None:
    run(app)
