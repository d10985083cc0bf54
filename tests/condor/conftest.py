import pytest
from sgtest.condor import CondorFixture


@pytest.fixture(scope="module")
def condor():
    """The real HTCondor pool with this module's wrappers (condor_submit, condor_rm) and job name;
    its jobs are removed at the end of the module."""
    fixture = CondorFixture()
    yield fixture
    fixture.cleanup()
