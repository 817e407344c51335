"""The language-model pipeline: canonical types, context, routing, execution, settlement."""
