"""Command-line tools that sit above the engine and trainer (placement for launch/slurm.sbatch, ...)."""
