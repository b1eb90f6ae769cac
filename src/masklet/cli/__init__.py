"""The `masklet` command: segment images and videos from the shell."""

from __future__ import annotations

import click

from masklet import __version__
from masklet.cli.auto import auto_cmd, auto_video_cmd
from masklet.cli.batch import batch_cmd
from masklet.cli.common import CliError
from masklet.cli.demo import demo_cmd
from masklet.cli.evaluate import eval_cmd
from masklet.cli.export import export_cmd
from masklet.cli.image import image_cmd
from masklet.cli.info import info_cmd
from masklet.cli.serve import serve_cmd
from masklet.cli.video import video_cmd


class _Main(click.Group):
    """The command group; a subcommand's usage error is reported in one line, like the
    other errors, instead of click's three (usage, hint, error)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            path = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            message = " ".join(exc.format_message().split()).rstrip(".")
            raise CliError(f"{message} (see '{path} -h')") from exc


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="masklet", help="Show the version and exit.")
def main() -> None:
    """masklet: SAM 2 segmentation and tracking of images and videos."""


main.add_command(image_cmd)
main.add_command(video_cmd)
main.add_command(info_cmd)
main.add_command(auto_cmd)
main.add_command(auto_video_cmd)
main.add_command(eval_cmd)
main.add_command(demo_cmd)
main.add_command(serve_cmd)
main.add_command(batch_cmd)
main.add_command(export_cmd)
