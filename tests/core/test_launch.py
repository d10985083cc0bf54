"""Launch links, the pure part: what a link may say (core/launch.py) and what the user's server
makes of the library's notebook (jupyter_ext/launch.py's copy and parameter cell)."""

import json

import nbformat
import pytest

from science_gateway.core.launch import LaunchError, LaunchLink, check_notebook_path, parse_launch_query


def q(**kw):
    return {k: [v] for k, v in kw.items()}


def test_a_full_link_parses_into_notebook_dataset_and_choices():
    link = parse_launch_query(q(notebook="spectra/fit.ipynb", dataset="demo:run2024.raw.0001", partition="cpu", cores="2"))
    assert link == LaunchLink("spectra/fit.ipynb", "demo:run2024.raw.0001", {"partition": "cpu", "cores": "2"})
    assert link.link_query() == {"notebook": "spectra/fit.ipynb", "dataset": "demo:run2024.raw.0001"}


def test_dataset_is_optional_and_empty_choices_are_left_to_the_form():
    link = parse_launch_query(q(notebook="a.ipynb", dataset="", cores=""))
    assert link == LaunchLink("a.ipynb", None, {})
    assert link.link_query() == {"notebook": "a.ipynb"}


@pytest.mark.parametrize("path", [
    "../etc/passwd.ipynb", "a/../../b.ipynb", "/etc/x.ipynb", ".hidden/a.ipynb", "a/.b.ipynb", "a.py",
    "a b.ipynb", "a//b.ipynb", "a/", "", "a\\b.ipynb", "a\x00.ipynb", "x" * 300 + ".ipynb", "/".join(["d"] * 9) + "/a.ipynb",
    "é.ipynb", "a.ipynb/",
])
def test_hostile_notebook_paths_are_refused_with_a_short_quote(path):
    with pytest.raises(LaunchError) as e:
        parse_launch_query(q(notebook=path))
    assert len(str(e.value)) < 400
    assert "notebook" in str(e.value)


def test_a_missing_notebook_says_how_to_name_one():
    with pytest.raises(LaunchError, match="notebook=PATH.ipynb"):
        parse_launch_query(q(dataset="demo:x"))


@pytest.mark.parametrize("query, words", [
    (q(notebook="a.ipynb", image="evil"), "unknown key 'image'"),
    (q(notebook="a.ipynb", dataset="no-scope"), "scope:name"),
    (q(notebook="a.ipynb", dataset="demo:../../x"), "no '..'"),
    ({"notebook": ["a.ipynb", "b.ipynb"]}, "appears 2 times"),
    (q(notebook="a.ipynb", partition="x" * 100), "longer than 64"),
    (q(notebook="a.ipynb", **{"x" * 500: "1"}), "unknown key"),
])
def test_hostile_links_are_refused_naming_the_part(query, words):
    with pytest.raises(LaunchError) as e:
        parse_launch_query(query)
    assert words in str(e.value)
    assert "x" * 70 not in str(e.value)  # at most a short prefix


def test_check_notebook_path_keeps_good_paths():
    assert check_notebook_path("01-astronomer-walkthrough.ipynb") == "01-astronomer-walkthrough.ipynb"
    assert check_notebook_path("a/b_c/d.e-f.ipynb") == "a/b_c/d.e-f.ipynb"


# -- the user's server: the copy ----------------------------------------------------------------

def notebook(*cells) -> bytes:
    nb = nbformat.v4.new_notebook(cells=list(cells))
    return nbformat.writes(nb).encode()


def test_the_dataset_goes_after_the_parameters_cell_as_a_python_literal():
    from science_gateway.jupyter_ext.launch import with_parameters

    source = notebook(
        nbformat.v4.new_markdown_cell("# Title"),
        nbformat.v4.new_code_cell("dataset = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(dataset)"),
    )
    nb = nbformat.reads(with_parameters(source, "demo:run2024.raw.0001"), as_version=4)
    nbformat.validate(nb)
    assert [c.source for c in nb.cells][1:3] == ["dataset = None", '# from the launch link\ndataset = "demo:run2024.raw.0001"']
    assert nb.cells[2].metadata["tags"] == ["injected-parameters"]
    namespace = {}
    exec(nb.cells[2].source, namespace)  # noqa: S102 (the cell as the kernel runs it)
    assert namespace["dataset"] == "demo:run2024.raw.0001"


def test_without_a_parameters_cell_the_dataset_comes_first_and_without_a_dataset_nothing_changes():
    from science_gateway.jupyter_ext.launch import with_parameters

    source = notebook(nbformat.v4.new_code_cell("x = 1"))
    first = nbformat.reads(with_parameters(source, "s:n"), as_version=4).cells
    assert first[0].source.endswith('dataset = "s:n"') and first[1].source == "x = 1"
    assert [c.source for c in nbformat.reads(with_parameters(source, None), as_version=4).cells] == ["x = 1"]


def test_a_copy_never_overwrites_and_an_unchanged_copy_is_reused(tmp_path):
    from science_gateway.jupyter_ext.launch import place_copy

    assert place_copy(str(tmp_path), "fit.ipynb", "one") == "launched/fit.ipynb"
    assert place_copy(str(tmp_path), "fit.ipynb", "one") == "launched/fit.ipynb"  # the same link again
    (tmp_path / "launched" / "fit.ipynb").write_text("the user's own changes")
    assert place_copy(str(tmp_path), "fit.ipynb", "one") == "launched/fit-2.ipynb"
    assert (tmp_path / "launched" / "fit.ipynb").read_text() == "the user's own changes"
    assert json.dumps(sorted(p.name for p in (tmp_path / "launched").iterdir())) == '["fit-2.ipynb", "fit.ipynb"]'


def test_the_copy_is_the_same_each_time_so_opening_a_link_twice_reuses_it():
    from science_gateway.jupyter_ext.launch import with_parameters

    old = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    old.nbformat_minor = 4
    for c in old.cells:
        c.pop("id", None)
    for source in (notebook(nbformat.v4.new_code_cell("x = 1")), json.dumps(old).encode()):
        once, twice = with_parameters(source, "s:n"), with_parameters(source, "s:n")
        assert once == twice
        nbformat.validate(nbformat.reads(once, as_version=4))
