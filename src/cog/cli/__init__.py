"""The `cog` command: serve, migrate, and work with series, images and jobs from a terminal."""

from __future__ import annotations

import typer

from cog.cli.batches import batches_app, jobs_batch
from cog.cli.doctor import DOCTOR_HELP, doctor
from cog.cli.images import images_app
from cog.cli.jobs import jobs_app, runs_app
from cog.cli.series import series_app
from cog.cli.serve import db_app, serve
from cog.cli.worker import worker

app = typer.Typer(
    help="Cog: make and organize AI-generated image series.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.command()(serve)
app.command()(worker)
app.command(help=DOCTOR_HELP)(doctor)
app.add_typer(db_app, name="db")
app.add_typer(series_app, name="series")
app.add_typer(images_app, name="images")
app.add_typer(jobs_app, name="jobs")
jobs_app.command("batch")(jobs_batch)
app.add_typer(runs_app, name="runs")
app.add_typer(batches_app, name="batches")


def main() -> None:
    app()
