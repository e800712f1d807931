"""Everything made from a dataset belongs to its content: re-registered or edited files never reuse old
splits, features or runs; recorded checksums are checked on use; a run's export refuses other data."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from dmesr.cli import main
from dmesr.config import DataConfig
from dmesr.data.identity import dataset_key
from dmesr.data.preprocess import prepare_split
from dmesr.data.registry import ChecksumError, fetch
from tests.test_data_registry import FAKE_INTER, fake_download  # noqa: F401 - a fixture
from tests.test_own_data import TINY, write_shop

ADD = ["--user", "user_id", "--item", "product_id", "--time", "order_number,add_to_cart_order",
       "--text", "product_name"]
DMESR = ["--items", "dmesr", "--epochs", "1", "--quiet", "--set", *TINY, "items.describer=precomputed",
         "items.views=text", "items.token_pca_dim=0", "items.adapter_hidden=16"]


@pytest.fixture
def shop(tmp_path, monkeypatch):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    orders, products, _ = write_shop(tmp_path)
    assert main(["data", "add", "shop", "--interactions", str(orders), "--items", str(products), *ADD]) == 0
    return orders, products


def embed_shop(tmp_path) -> None:
    descriptions = tmp_path / "described.jsonl"
    descriptions.write_text("".join(json.dumps({"item": f"p{k}", "view": "text", "description": f"Snack {k}."})
                                    + "\n" for k in range(16)))
    assert main(["enrich", "--dataset", "shop", "--describer", "precomputed", "--path", str(descriptions),
                 "--views", "text"]) == 0
    assert main(["embed", "--dataset", "shop", "--describer", "precomputed", "--views", "text", "--device", "cpu"]) == 0


def test_registering_a_name_again_never_uses_the_old_features(tmp_path, shop, capsys):
    orders, products = shop
    embed_shop(tmp_path)
    first = dataset_key("shop")
    renamed = tmp_path / "renamed.csv"
    pd.read_csv(products).assign(product_name=lambda t: "Renamed " + t["product_name"]).to_csv(renamed, index=False)
    capsys.readouterr()
    assert main(["data", "add", "shop", "--interactions", str(orders), "--items", str(renamed), *ADD]) == 0
    assert f"shop had other content before ({first})" in capsys.readouterr().out
    assert dataset_key("shop") != first
    assert main(["train", "--dataset", "shop", "--model", "sasrec", "--output-dir", "runs", *DMESR]) == 2
    err = capsys.readouterr().err
    assert "no semantic features for dataset 'shop'" in err and f"those in enrich/{first} were made from other" in err


def test_a_file_edited_after_embed_is_named_and_never_used(tmp_path, shop, capsys):
    orders, products = shop
    embed_shop(tmp_path)
    table = pd.read_csv(products)
    table.assign(product_name="Something else").to_csv(products, index=False)
    capsys.readouterr()
    assert main(["train", "--dataset", "shop", "--model", "sasrec", "--output-dir", "runs", *DMESR]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{products}: changed since `dmesr data add shop`" in err
    assert "run `dmesr data add shop ...` again" in err


def test_recorded_checksums_are_checked_on_use(tmp_path, shop, capsys):
    orders, _ = shop
    assert main(["data", "stats", "shop", "--set", "num_sampled_negatives=5"]) == 0
    os.utime(orders, ns=(1, 1))  # touched, same content: hashed again, still the registered file
    assert main(["data", "stats", "shop", "--set", "num_sampled_negatives=5"]) == 0
    lines = orders.read_text().splitlines()
    orders.write_text("\n".join(lines[:-5]) + "\n")
    capsys.readouterr()
    assert main(["data", "stats", "shop", "--set", "num_sampled_negatives=5"]) == 2
    assert f"{orders}: changed since `dmesr data add shop`" in capsys.readouterr().err


def test_a_tampered_extracted_builtin_file_is_refused(tmp_path, fake_download):  # noqa: F811
    home = tmp_path / "home"
    folder = fetch("ml-100k", home)
    (folder / "ml-100k.inter").write_text(FAKE_INTER.splitlines()[0] + "\n")  # its rows deleted
    with pytest.raises(ChecksumError, match=r"ml-100k\.inter: not the file the verified .*data fetch ml-100k --force"):
        prepare_split(DataConfig(dataset="ml-100k"), home)
    assert fetch("ml-100k", home, force=True) == folder
    assert (folder / "ml-100k.inter").read_text() == FAKE_INTER


def test_export_of_a_run_refuses_other_data_as_evaluate_does(tmp_path, shop, capsys):
    orders, products = shop
    assert main(["train", "--dataset", "shop", "--model", "pop", "--output-dir", "runs", "--quiet",
                 "--set", *TINY]) == 0
    (run_dir,) = (tmp_path / "runs" / dataset_key("shop") / "pop").iterdir()
    assert main(["export", str(run_dir), str(tmp_path / "first")]) == 0

    fewer = tmp_path / "fewer.csv"
    pd.read_csv(orders).iloc[:-8].to_csv(fewer, index=False)  # another registration of the name
    assert main(["data", "add", "shop", "--interactions", str(fewer), "--items", str(products), *ADD]) == 0
    capsys.readouterr()
    for command in (["export", str(run_dir), str(tmp_path / "second")], ["evaluate", str(run_dir)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{run_dir} was trained on other data" in err and "registration of shop has other files" in err
    assert not (tmp_path / "second").exists()

    assert main(["data", "add", "shop", "--interactions", str(orders), "--items", str(products), *ADD]) == 0
    orders.write_text(orders.read_text().replace("c1,", "c2,"))  # the data changed since training
    capsys.readouterr()
    assert main(["export", str(run_dir), str(tmp_path / "third")]) == 2
    assert f"{orders}: changed since" in capsys.readouterr().err and not (tmp_path / "third").exists()
