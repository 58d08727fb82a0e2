import torch

from blade import apply_blade
from blade.models import tiny_transformer_inputs
from tests.patching.helpers import preset, run


def test_compiled_patched_transformer_matches_eager(wan_pipeline):
    """torch.compile (graph capture with the "eager" backend, which skips slow CPU code generation)
    gives the eager patched outputs across a dense and two sparse steps."""
    transformer = wan_pipeline.transformer
    schedule = [999.0, 600.0, 300.0]
    apply_blade(transformer, preset("wan", dense_steps=1), schedule=schedule)
    inputs = [tiny_transformer_inputs(wan_pipeline, timestep=timestep) for timestep in schedule]
    expected = [run(transformer, x) for x in inputs]

    compiled = torch.compile(transformer, backend="eager")
    for x, reference in zip(inputs, expected):
        torch.testing.assert_close(run(compiled, x), reference, rtol=0, atol=1e-6)
