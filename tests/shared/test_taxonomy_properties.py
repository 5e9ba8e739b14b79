"""Property tests of file name -> label: any name (markup, traversal, control characters, any
script) gives None or a class of the taxonomy, never an exception; folders never matter."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_service.archives import label_for_path
from shared.taxonomy import CLASSES, class_from_filename

PROPERTY = settings(max_examples=500, deadline=None, database=None, derandomize=True)
SEPARATORS = "_-."
NAMES = st.text(alphabet=st.characters(codec="utf-8"), max_size=80) | st.sampled_from(
    ["", ".", "..", "/", "\\", "../../etc/passwd", "<img src=x onerror=alert(1)>.jpg", "melanoma",
     "MELANOMA_",
     "nul\x00melanoma_x.jpg", "basal_cell_carcinoma-12.png", "..\\..\\melanoma_x.jpg"])


@PROPERTY
@given(NAMES)
def test_any_file_name_gives_none_or_a_taxonomy_class(name: str) -> None:
    label = class_from_filename(name)
    assert label is None or label in CLASSES
    if label is not None:
        base = name.replace("\\", "/").rsplit("/", 1)[-1].lower()
        assert base.startswith(label) and base[len(label)] in SEPARATORS


@PROPERTY
@given(st.sampled_from(CLASSES), st.sampled_from(SEPARATORS),
       NAMES.filter(lambda n: "/" not in n and "\\" not in n),
       st.lists(NAMES, max_size=4))
def test_a_class_prefix_labels_the_file_wherever_it_sits(label: str, separator: str, rest: str,
                                                         folders: list[str]) -> None:
    name = f"{label.upper() if len(rest) % 2 else label}{separator}{rest}"
    found = class_from_filename(name)
    assert found is not None and found.startswith(label)  # a longer class may start with this one
    assert class_from_filename("/".join([*folders, name])) == found


@PROPERTY
@given(st.lists(NAMES, min_size=0, max_size=6).map("/".join))
def test_any_archive_path_gives_none_or_a_taxonomy_class(path: str) -> None:
    label = label_for_path(path)
    assert label is None or label in CLASSES
