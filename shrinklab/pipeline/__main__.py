"""``python -m shrinklab.pipeline``: the pipeline's command line (:mod:`shrinklab.pipeline.cli`)."""

from shrinklab.pipeline.cli import main

if __name__ == "__main__":
    main()
