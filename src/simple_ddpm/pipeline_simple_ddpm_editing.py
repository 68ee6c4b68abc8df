"""The base of the editing pipelines (img2img, inpainting, inversion): a SimpleDDPMPipeline's components, another
`__call__`, and the same saved folder."""

import os

from .pipeline_simple_ddpm import SimpleDDPMPipeline


class SimpleDDPMEditingPipeline(SimpleDDPMPipeline):
    """A `SimpleDDPMPipeline` that edits images. Any `SimpleDDPMPipeline` folder loads as each editing pipeline,
    and `from_pipe(pipe)` shares a loaded one's components."""

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Save the folder of the `SimpleDDPMPipeline` whose components this pipeline shares: it loads as any of
        them, and is the layout the Hub repos have."""
        SimpleDDPMPipeline.from_pipe(self).save_pretrained(save_directory, **kwargs)
