import pytest
from sgtest.slurm import SlurmFixture


@pytest.fixture(scope="module")
def slurm():
    """The real Slurm with this module's wrappers (sbatch, scancel, squeue, sinfo) and job name;
    its jobs are cancelled at the end of the module."""
    fixture = SlurmFixture()
    yield fixture
    fixture.cleanup()
