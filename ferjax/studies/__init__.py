"""Studies: multi-run experiments of one paper as one resumable command."""
