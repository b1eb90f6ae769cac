"""The `masklet` command: segment images and videos from the shell."""

from __future__ import annotations

import click

from masklet import __version__
from masklet.cli.auto import auto_cmd, auto_video_cmd
from masklet.cli.demo import demo_cmd
from masklet.cli.evaluate import eval_cmd
from masklet.cli.image import image_cmd
from masklet.cli.info import info_cmd
from masklet.cli.serve import serve_cmd
from masklet.cli.video import video_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="masklet")
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
