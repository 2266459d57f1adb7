"""Training-ready exports of a mixture version: tokenised, globally shuffled files with lineage sidecars.

`build` checks and runs an export (the composite: scatter per mixture file, gather per output part, commit),
`shuffle` holds its steps (keys, tokenising, parts, sidecars, takedown reuse), `formats` the output formats
(one `ExportFormat` class each), `lineage` answers which documents are behind a token or a training step,
`report` the summary, artifacts and data-card section, `cli_commands` the `export` and `lineage` commands.
"""
