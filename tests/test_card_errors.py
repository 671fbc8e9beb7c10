"""Malformed checkpoint cards fail in one line (CheckpointError), never a traceback."""
import json

import numpy as np
import pytest

from hfgd_lab.cli import main
from hfgd_lab.engine.checkpoint import CheckpointError, read_card
from hfgd_lab.engine.loaded import card_classes


@pytest.mark.parametrize("config", [5, "abc", [1, 2], None])
def test_a_card_whose_config_is_not_a_mapping_is_refused(tmp_path, config, capsys):
    (tmp_path / "m.json").write_text(json.dumps({"config": config}))
    (tmp_path / "m.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="expected a mapping of model settings"):
        read_card(tmp_path / "m.json")
    assert main(["eval", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected a mapping of model settings" in err[0]


@pytest.mark.parametrize("classes", [5, "abc", {"a": 1}, 2.5])
def test_card_classes_of_a_malformed_classes_entry_fall_back(classes):
    names, palette = card_classes({"classes": classes}, 3)
    assert names == ("class 0", "class 1", "class 2")
    assert palette.shape == (3, 3) and palette.dtype == np.uint8


def test_card_classes_keeps_a_list_of_names():
    names, _ = card_classes({"classes": ["sky", "road"]}, 3)
    assert names == ("sky", "road", "class 2")


def test_a_model_with_the_scene_classes_is_a_scenes_model_whatever_its_card_says():
    # predict and the app warn alike about a model that knows only the scenes' classes,
    # e.g. one trained on `hfgd-lab make-scenes` folders (card: dataset 'folder')
    from hfgd_lab.data import SCENE_CLASSES
    from hfgd_lab.engine.loaded import LoadedModel

    def loaded(card, classes):
        return LoadedModel(None, card, "m", "m", "checkpoint", tuple(classes),
                           np.zeros((len(classes), 3), np.uint8), None)
    assert loaded({"dataset": "folder"}, SCENE_CLASSES).is_scenes_model
    assert loaded({"trained_on": "built-in procedural scenes"}, ["a", "b"]).is_scenes_model
    assert not loaded({"dataset": "folder"}, ["a", "b"]).is_scenes_model
