"""Load: the open-loop generator, the OpenAI-compatible client and the pass/fail criteria."""
