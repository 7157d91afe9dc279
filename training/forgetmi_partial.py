"""The public Forget-MI release's program path, so its sweep file runs unchanged under
``wandb agent``: the release's flags are translated and ``launch/unlearn.py`` runs on every GPU
of the node (``forgetmi.hpc.node_launch``). New sweeps use ``launch/unlearn.py``; ``forgetmi
convert-sweep`` rewrites an old file."""

from forgetmi.hpc.node_launch import release_main

if __name__ == "__main__":
    raise SystemExit(release_main())
