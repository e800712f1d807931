"""Your own data from the command line: `data add`, repeat-aware evaluation, the trivial baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dmesr.cli import main
from dmesr.config import DataConfig, EvalConfig, load_config
from dmesr.data import build_split
from dmesr.data.batches import evaluation_inputs
from dmesr.data.identity import dataset_key
from dmesr.data.preprocess import k_core, prepare_split
from dmesr.data.repeats import has_repeats, repeat_share, target_is_repeat
from dmesr.data.schema import RawDataset
from dmesr.data.tables import load_table
from dmesr.evaluation import evaluate, item_popularity
from dmesr.models.baselines import Popularity, RepeatPopularity

TINY = ["data.num_sampled_negatives=5", "data.max_len=8", "model.hidden_size=16", "model.num_layers=1",
        "model.num_heads=1", "train.batch_size=16", "train.device=cpu"]


def write_shop(folder: Path, num_users: int = 24, num_items: int = 16, orders: int = 5, seed: int = 0) -> tuple:
    """Order lines (user, product, order number, position in the basket) with re-purchases, rows
    shuffled so that only the two ordering columns give the sequence, and a product table with names."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        favourites = rng.choice(num_items, size=3, replace=False)
        for order in range(1, orders + 1):
            basket = list(rng.choice(favourites, size=2, replace=False)) + list(rng.choice(num_items, size=2))
            for position, product in enumerate(basket, start=1):
                rows.append({"user_id": f"c{user}", "product_id": f"p{product}", "order_number": order,
                             "add_to_cart_order": position})
    orders_table = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    orders_path, products_path = folder / "orders.csv", folder / "products.csv"
    orders_table.to_csv(orders_path, index=False)
    pd.DataFrame({"product_id": [f"p{k}" for k in range(num_items)],
                  "product_name": [f"Product number {k}" for k in range(num_items)],
                  "aisle": ["snacks"] * num_items}).to_csv(products_path, index=False)
    return orders_path, products_path, orders_table


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def test_own_csv_through_every_command(tmp_path, home, capsys):
    orders, products, table = write_shop(tmp_path)
    assert main(["data", "add", "shop", "--interactions", str(orders), "--items", str(products), "--user", "user_id",
                 "--item", "product_id", "--time", "order_number,add_to_cart_order", "--text", "product_name"]) == 0
    assert "added shop: 24 users, 16 items" in capsys.readouterr().out
    assert json.loads((home / "datasets" / "shop.json").read_text())["time"] == ["order_number", "add_to_cart_order"]
    assert main(["data", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("shop  table: ")

    assert main(["data", "stats", "shop", "--set", "num_sampled_negatives=5"]) == 0
    printed = capsys.readouterr().out
    stats = json.loads(printed[printed.index("{"):])
    assert stats["users"] == 24 and stats["repeat_consumption"] > 0.3 and stats["repeat_targets"]["test"] > 0
    split = prepare_split(DataConfig(dataset="shop", num_sampled_negatives=5))
    first = table[table["user_id"] == "c0"].sort_values(["order_number", "add_to_cart_order"])["product_id"]
    assert list(split.item_ids[split.sequence(int(np.flatnonzero(split.user_ids == "c0")[0])) - 1]) == list(first)
    assert split.items.set_index("item").loc["p3", "text"] == "Product name: Product number 3."

    out = tmp_path / "runs"
    assert main(["train", "--dataset", "shop", "--model", "sasrec", "--epochs", "1", "--output-dir", str(out),
                 "--set", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "of 0 training" not in printed and "training interactions (" in printed
    assert "exclude_history=auto -> false" in printed
    shop = dataset_key("shop")  # the name and its content identity
    assert shop.startswith("shop-") and len(shop) == len("shop-") + 8
    (run_dir,) = (out / shop / "sasrec").iterdir()
    final = json.loads((run_dir / "final.json").read_text())
    assert final["exclude_history"] is False and 0 < final["trained_share"] < 1
    assert final["test_breakdown"]["repeat"]["num_users"] + final["test_breakdown"]["new"]["num_users"] == 24

    descriptions = tmp_path / "described.jsonl"
    descriptions.write_text("".join(json.dumps({"item": f"p{k}", "view": "text",
                                                "description": f"A snack, number {k}."}) + "\n" for k in range(4)))
    assert main(["enrich", "--dataset", "shop", "--describer", "precomputed", "--path", str(descriptions),
                 "--views", "text", "--limit", "4"]) == 0
    assert main(["embed", "--dataset", "shop", "--describer", "precomputed", "--views", "text",
                 "--device", "cpu"]) == 0
    assert main(["train", "--dataset", "shop", "--model", "sasrec", "--items", "dmesr", "--epochs", "1",
                 "--output-dir", str(out), "--quiet", "--set", *TINY, "items.describer=precomputed",
                 "items.views=text", "items.token_pca_dim=0", "items.adapter_hidden=16"]) == 0
    (dmesr_run,) = (out / shop / "sasrec").glob("dmesr-*")
    assert json.loads((dmesr_run / "final.json").read_text())["items"] == "dmesr"

    grid = tmp_path / "grid.yaml"
    grid.write_text(f"name: shop\nbase: {{output_dir: {out}, data: {{num_sampled_negatives: 5, max_len: 8}}, "
                    "train: {device: cpu, max_epochs: 1}}\ndatasets: [shop]\nmodels: [pop, repeat-pop]\n"
                    "seeds: [1]\nmethods: {backbone: {items.kind: id}}\n")
    assert main(["experiments", "run", str(grid)]) == 0
    pop, repeat_pop = (json.loads(next((out / shop / name).glob("id-*-seed1/final.json")).read_text())["test"]
                       for name in ("pop", "repeat-pop"))
    assert repeat_pop["NDCG@10"] > pop["NDCG@10"]  # the log has favourite products bought again and again

    # a fresh data home: the run's data.json says how to rebuild the split
    (home / "datasets" / "shop.json").unlink()
    assert main(["evaluate", str(run_dir), "--protocol", "sampled", "--device", "cpu"]) == 0
    sampled = json.loads((run_dir / "evaluation-sampled.json").read_text())
    assert sampled["protocol"] == "sampled" and 0 <= sampled["test"]["NDCG@10"] <= 1
    assert main(["export", str(run_dir), str(tmp_path / "export")]) == 0
    assert main(["export", "shop", str(tmp_path / "export-by-name"), "--set", "num_sampled_negatives=5"]) == 0
    exported = tmp_path / "export" / "test.csv"
    assert exported.read_bytes() == (tmp_path / "export-by-name" / "test.csv").read_bytes()
    assert len(pd.read_csv(exported)) == 24
    assert "may be\n  items the user had before" in (tmp_path / "export" / "README.md").read_text()


def test_bad_files_are_one_line_naming_the_file(tmp_path, home, capsys):
    orders, products, _ = write_shop(tmp_path)
    add = ["data", "add", "shop", "--interactions"]
    assert main([*add, str(orders), "--user", "user_id", "--item", "product_id", "--time", "when"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(orders) in err and "missing required column 'when'" in err
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main([*add, str(empty), "--user", "u", "--item", "i", "--time", "t"]) == 2
    assert f"{empty}: the file is empty" in capsys.readouterr().err
    words = tmp_path / "words.csv"
    words.write_text("u,i,t\na,b,yesterday\n")
    assert main([*add, str(words), "--user", "u", "--item", "i", "--time", "t"]) == 2
    assert f"{words}: timestamps must be numbers or ISO dates" in capsys.readouterr().err
    assert main(["data", "add", "ml-1m", "--interactions", str(orders)]) == 2
    assert "built-in dataset" in capsys.readouterr().err
    assert not (home / "datasets" / "shop.json").exists()


def test_recbole_folders_amazon_files_and_image_columns_register_too(tmp_path, home, capsys):
    from dmesr.data import load_raw

    fixtures = Path(__file__).resolve().parents[1] / "data" / "fixtures"
    assert main(["data", "add", "toy", "--interactions", str(fixtures / "image-toy")]) == 0
    assert json.loads((home / "datasets" / "toy.json").read_text())["format"] == "recbole"
    assert len(load_raw("toy").items) == len(load_raw(str(fixtures / "image-toy")).items)
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text("".join(json.dumps({"reviewerID": f"u{k % 3}", "asin": f"a{k % 4}", "unixReviewTime": k})
                               + "\n" for k in range(12)))
    assert main(["data", "add", "reviews", "--interactions", str(reviews)]) == 0
    assert json.loads((home / "datasets" / "reviews.json").read_text())["format"] == "amazon"
    assert load_raw("reviews").interactions["timestamp"].tolist() == list(range(12))
    orders, products, _ = write_shop(tmp_path)
    Image.new("RGB", (4, 4), "red").save(tmp_path / "p1.jpg")  # data add checks that a named picture decodes
    pd.read_csv(products).assign(picture=lambda t: ["p1.jpg" if i == "p1" else "" for i in t["product_id"]]
                                 ).to_csv(products, index=False)
    assert main(["data", "add", "pics", "--interactions", str(orders), "--items", str(products), "--user",
                 "user_id", "--item", "product_id", "--time", "order_number", "--image", "picture"]) == 0
    images = load_raw("pics").items.set_index("item")["image_path"]
    assert images["p1"] == str(tmp_path / "p1.jpg") and images.drop("p1").isna().all()


def test_two_ordering_columns_rank_rows_left_to_right(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_text("u\ti\torder\tpos\nx\ta\t2\t1\nx\tb\t1\t2\nx\tc\t1\t1\nx\td\t10\t1\n")
    raw = load_table(path, "u", "i", ["order", "pos"])
    assert raw.interactions.sort_values("timestamp")["item"].tolist() == ["c", "b", "a", "d"]
    jsonl = tmp_path / "log.jsonl"
    jsonl.write_text('{"u": "x", "i": "a", "t": 3}\n{"u": "x", "i": "b", "t": 1}\n')
    assert load_table(jsonl, "u", "i", "t").interactions["timestamp"].tolist() == [3, 1]


def test_k_core_counts_distinct_users_and_keeps_every_interaction():
    # item 0: one user five times; items 1, 2, 3: three users once each
    users = np.array([0, 0, 0, 0, 0, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    items = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    alive, _ = k_core(users, items, np.ones(len(users), dtype=bool), min_user=2, min_item=2)
    assert not alive[:5].any() and alive[5:].all()  # item 0 has one distinct user: gone despite 5 rows
    repeat_rows = np.concatenate([users, [1, 1]]), np.concatenate([items, [2, 2]])
    alive, _ = k_core(*repeat_rows, np.ones(len(users) + 2, dtype=bool), min_user=2, min_item=2)
    assert alive[-2:].all()  # a survivor's repeated interactions are all kept


def repeat_only_split():
    """Every user cycles through their own three items, so every validation and test target is a repeat."""
    rows = []
    for user in range(30):
        own = [(user * 3 + k) % 40 for k in range(3)]
        for step in range(9):
            rows.append((f"u{user}", f"i{own[step % 3]}", step))
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    items = pd.DataFrame({"item": sorted(frame["item"].unique()), "text": ""})
    raw = RawDataset(name="cycles", interactions=frame, items=items)
    return build_split(raw, DataConfig(min_user_interactions=3, min_item_interactions=1, num_sampled_negatives=5))


def test_repeat_pop_is_not_rewarded_by_excluding_the_history():
    split = repeat_only_split()
    assert has_repeats(split) and target_is_repeat(split, "test").all() and repeat_share(split) > 0.5
    inputs = evaluation_inputs(split, "test", max_len=50)
    model = RepeatPopularity(item_popularity(split), max_len=50)
    default = evaluate(model, inputs, EvalConfig()).metrics["NDCG@10"]
    nothing_excluded = evaluate(model, inputs, EvalConfig(exclude_history=False)).metrics["NDCG@10"]
    leaky = evaluate(model, inputs, EvalConfig(exclude_history=True)).metrics["NDCG@10"]
    assert default == nothing_excluded == pytest.approx(0.5) and leaky == 1.0  # the target is third of its own
    # sampled protocol on repeat data: negatives may be seen items, so repeat-pop does not always win
    assert any(np.isin(split.test_negatives[u], split.sequence(u)).any() for u in range(split.num_users))
    assert evaluate(model, inputs, EvalConfig(protocol="sampled")).metrics["NDCG@10"] < 1.0


def test_auto_excludes_history_on_data_without_repeats(tiny_split):
    assert not has_repeats(tiny_split)
    inputs = evaluation_inputs(tiny_split, "test", max_len=8)
    model = Popularity(item_popularity(tiny_split), max_len=8)
    assert np.array_equal(evaluate(model, inputs, EvalConfig()).ranks,
                          evaluate(model, inputs, EvalConfig(exclude_history=True)).ranks)
    assert load_config(overrides=["eval.exclude_history=true"]).eval.exclude_history is True
    assert load_config(overrides=["eval.exclude_history=auto"]).eval.exclude_history == "auto"


def test_baselines_train_as_runs_and_keep_run_names(tmp_path, tiny_split):
    from dmesr.config import config_hash
    from dmesr.training.run import evaluate_run, train_run

    for name in ("pop", "repeat-pop"):
        config = load_config(overrides=[f"model.name={name}", f"output_dir={tmp_path}", *TINY])
        run_dir = train_run(config, show_progress=False, split=tiny_split)
        final = json.loads((run_dir / "final.json").read_text())
        assert final["epochs"] == 1 and final["stopped"] == "nothing to train" and final["parameters"] == 0
        assert 0 < final["test"]["NDCG@10"] < 1
        evaluate_run(run_dir, "sampled", "cpu", split=tiny_split)
    # "auto" hashes like the true it replaced, so runs trained before keep their folders
    assert config_hash(load_config(overrides=["eval.exclude_history=auto"])) == \
        config_hash(load_config(overrides=["eval.exclude_history=true"]))


def test_repeat_pop_counts_the_whole_history_by_default():
    """Each user's favourite, bought five times long ago, comes back as the test target: only the whole
    history (the default) sees it; the max_len window of the last 3 items does not."""
    rows = []
    for user in range(12):
        favourite, others = f"f{user % 4}", [f"i{(user + k) % 7}" for k in range(4)]
        rows += [(f"u{user}", item, step) for step, item in enumerate([favourite] * 5 + others + [favourite])]
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    raw = RawDataset(name="favourites", interactions=frame, items=pd.DataFrame({"item": frame["item"].unique(),
                                                                                  "text": ""}))
    split = build_split(raw, DataConfig(min_user_interactions=1, min_item_interactions=1, num_sampled_negatives=5))
    inputs = evaluation_inputs(split, "test", max_len=3)
    whole = RepeatPopularity(item_popularity(split), max_len=3)
    window = RepeatPopularity(item_popularity(split), max_len=3, whole_history=False)
    assert evaluate(whole, inputs, EvalConfig()).metrics["NDCG@10"] == 1.0
    assert evaluate(window, inputs, EvalConfig()).metrics["NDCG@10"] < 0.7


def test_baselines_count_every_training_interaction(tmp_path, home):
    orders, _, _ = write_shop(tmp_path, orders=20)
    assert main(["data", "add", "shop", "--interactions", str(orders), "--user", "user_id", "--item", "product_id",
                 "--time", "order_number,add_to_cart_order"]) == 0
    shares = {}
    for model in ("pop", "repeat-pop", "sasrec"):
        assert main(["train", "--dataset", "shop", "--model", model, "--epochs", "1", "--output-dir",
                     str(tmp_path / "runs"), "--quiet", "--set", *TINY]) == 0
        final = next((tmp_path / "runs").glob(f"shop-*/{model}/*/final.json"))
        shares[model] = json.loads(final.read_text())["trained_share"]
    assert shares["pop"] == shares["repeat-pop"] == 1.0 and shares["sasrec"] < 0.2  # 9 of about 78 per user


def test_dataset_formats_are_one_registry_that_data_add_offers_and_the_reader_dispatches_on(tmp_path, home,
                                                                                               monkeypatch, capsys):
    from dmesr.cli import build_parser
    from dmesr.data import load_raw, own

    # a format is one line in the registry: here, tables whose columns are always u, i, t
    fixed = own.DatasetFormat("tables with columns u, i, t",
                              lambda entry: own.FORMATS["table"].load({**entry, "user": "u", "item": "i", "time": ["t"]}))
    monkeypatch.setitem(own.FORMATS, "fixed", fixed)
    add = build_parser()._subparsers._group_actions[0].choices["data"]._subparsers._group_actions[0].choices["add"]
    format_option = next(action for action in add._actions if action.dest == "format")
    assert format_option.choices == list(own.FORMATS)
    assert all(layout.about in format_option.help for layout in own.FORMATS.values())
    log = tmp_path / "log.csv"
    log.write_text("u,i,t\n" + "".join(f"v{k % 4},x{k % 5},{k}\n" for k in range(20)))
    assert main(["data", "add", "mine", "--interactions", str(log), "--format", "fixed"]) == 0
    assert json.loads((home / "datasets" / "mine.json").read_text())["format"] == "fixed"
    assert load_raw("mine").interactions["timestamp"].tolist() == list(range(20))
    capsys.readouterr()
    assert main(["data", "list"]) == 0
    assert f"mine  fixed: {log}" in capsys.readouterr().out
    monkeypatch.delitem(own.FORMATS, "fixed")  # a registration whose format is gone: one clear line
    assert main(["data", "stats", "mine"]) == 2
    assert "unknown dataset format 'fixed'; known: table, amazon, recbole" in capsys.readouterr().err
