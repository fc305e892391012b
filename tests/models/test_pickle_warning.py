"""mg-tune saves its MLflow Models as pickle on purpose (mg_tune.mlflow_model): MLflow's warning about that choice is dropped there, and only there."""

import logging

from mg_tune.config import TrainConfig
from mg_tune.data.card import DatasetCard
from mg_tune.mlflow_model import PICKLE_WARNING, save_mlflow_model
from mg_tune.models import build_model


def test_saving_drops_mlflows_pickle_warning_and_nothing_else(tmp_path, caplog):
    logger = logging.getLogger("mlflow.pytorch")
    with caplog.at_level(logging.WARNING, logger="mlflow.pytorch"):
        folder = save_mlflow_model(build_model("smerf_cnn", 4), TrainConfig(model="smerf_cnn"), DatasetCard("textbox_multilabel", list("abcd"), True, 64), tmp_path / "m")
        assert (folder / "MLmodel").is_file()
        assert [r.getMessage() for r in caplog.records if r.getMessage().startswith(PICKLE_WARNING)] == []
        logger.warning(f"{PICKLE_WARNING} -- outside mg-tune's save")  # the filter does not outlive the save
        logger.warning("another MLflow warning")
    assert [r.getMessage() for r in caplog.records if r.name == "mlflow.pytorch"] == [f"{PICKLE_WARNING} -- outside mg-tune's save", "another MLflow warning"]
