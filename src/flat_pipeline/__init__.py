"""flat_pipeline: LLM unlearning with FLAT and its baselines, as a Kedro project.

The ML engine (data formats, synthetic world, prompts, models, template answers) is plain Python in this package;
`flat_pipeline.pipelines` holds the thin Kedro wiring around it.
"""

__version__ = "0.1.0"
