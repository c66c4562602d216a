from utils.evaluation import advice as A
from utils.evaluation import intervals as I


def kinds(lines):
    return [a.kind for a in lines]


def balanced(n=300, right=95, support=100):
    return [A.ClassNumbers(name, n, right, support) for name in ("circle", "square", "triangle")]


def test_a_healthy_run_gets_no_advice():
    run = A.RunNumbers(train_acc=[0.6, 0.9, 0.97], val_acc=[0.6, 0.9, 0.96], val=(288, 300),
                       test=(285, 300), classes=balanced())
    assert A.advise(run) == []


def test_overfitting_states_both_figures_and_the_gap():
    run = A.RunNumbers(train_acc=[0.8, 0.95, 0.99], val_acc=[0.75, 0.8, 0.84], val=(252, 300))
    (a,) = A.advise(run)
    assert a.kind == "overfitting"
    assert "training top-1 99.0% vs validation 84.0%" in a.text
    assert "15-point gap" in a.text and "300 images" in a.text
    assert a.basis["gap"] == 0.99 - 0.84


def test_a_gap_inside_the_validation_noise_is_not_called_overfitting():
    # 20 validation images at 80%: the interval (58.4-91.9%) reaches training's 91%.
    run = A.RunNumbers(train_acc=[0.91], val_acc=[0.80], val=(16, 20))
    assert "overfitting" not in kinds(A.advise(run))


def test_underfitting_still_rising_or_flat():
    rising = A.RunNumbers(train_acc=[0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85],
                          val_acc=[0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.84], val=(840, 1000))
    (a,) = A.advise(rising)
    assert a.kind == "underfitting" and "more --epochs" in a.text and "85.0%" in a.text
    timed = A.RunNumbers(**{**rising.__dict__, "time_budget": 18.0})  # the clock ended it
    (t,) = A.advise(timed)
    assert "a longer --time-budget (this run stopped at 18 min)" in t.text
    flat = A.RunNumbers(train_acc=[0.6] * 8, val_acc=[0.6] * 8, val=(600, 1000))
    (b,) = A.advise(flat)
    assert b.kind == "underfitting" and "larger model" in b.text


def test_small_validation_and_test_sets_are_called_so_with_their_numbers():
    run = A.RunNumbers(val=(17, 30), test=(21, 24))
    lines = A.advise(run)
    assert kinds(lines) == ["validation_too_small", "test_too_small"]
    assert "30 images" in lines[0].text and "±17 points" in lines[0].text
    assert "about 93 images" in lines[0].text


def test_a_small_test_set_points_at_the_larger_validation_figure():
    # The story: 24 test images at 87.5% vs the user's 153-image val/ at 73.9%.
    lines = A.advise(A.RunNumbers(val=(113, 153), test=(21, 24)))
    (a,) = lines
    assert a.kind == "test_too_small"
    assert "24 images" in a.text and "73.9%" in a.text and "153 images" in a.text


def test_add_photos_of_a_weak_small_class_and_name_a_weak_large_one():
    classes = [A.ClassNumbers("ants", 40, 12, 20), A.ClassNumbers("bees", 380, 95, 100),
               A.ClassNumbers("wasps", 400, 60, 100), A.ClassNumbers("flies", 390, 96, 100)]
    lines = A.advise(A.RunNumbers(classes=classes,
                                  confused=[("wasps", "bees", 30), ("ants", "bees", 8)]))
    by_kind = {a.kind: a for a in lines}
    assert "add photos of ants" in by_kind["add_photos"].text
    assert "recall 60.0%" in by_kind["add_photos"].text
    assert "40 training images" in by_kind["add_photos"].text
    assert "wasps is hard despite 400" in by_kind["hard_class"].text
    assert "taken for bees (30)" in by_kind["hard_class"].text
    assert "most confused: wasps taken for bees (30 of 100 wasps images, 30.0%)" \
        in by_kind["most_confused"].text
    assert "imbalance" in by_kind and "10.0x" in by_kind["imbalance"].text


def test_a_balanced_pair_is_not_short_of_photos():
    # Two classes, 912 and 889 training images: the weaker one (below the mean) is hard;
    # the other, above the mean, gets no advice, and neither is "short" of photos.
    classes = [A.ClassNumbers("cats", 912, 64, 88), A.ClassNumbers("dogs", 889, 86, 110)]
    kinds = [a.kind for a in A.advise(A.RunNumbers(classes=classes))]
    assert kinds == ["hard_class"]


def test_one_stray_confusion_is_not_advice():
    run = A.RunNumbers(classes=balanced(right=99), confused=[("circle", "square", 1)])
    assert A.advise(run) == []


def test_imbalance_names_the_flag_unless_it_was_used():
    classes = [A.ClassNumbers("a", 900, 90, 100), A.ClassNumbers("b", 100, 90, 100)]
    (a,) = A.advise(A.RunNumbers(classes=classes))
    assert "9.0x" in a.text and "--class-weights auto" in a.text
    (b,) = A.advise(A.RunNumbers(classes=classes, class_weights=True))
    assert "already weighs" in b.text


def test_leaks_are_counted():
    (a,) = A.advise(A.RunNumbers(leaks={"test images duplicating training images": 3,
                                        "blank images": 0}))
    assert a.kind == "leaks" and "3 test images duplicating training images" in a.text
    assert "blank" not in a.text


def test_best_epoch_within_noise_is_reported():
    e = I.epochs_within_noise(counts=[80, 90, 91], images=100)
    lines = A.advise(A.RunNumbers(epochs=e))
    assert kinds(lines) == ["epochs_within_noise"] and "epoch 2" in lines[0].text


def test_every_line_states_a_number():
    classes = [A.ClassNumbers("a", 900, 50, 100), A.ClassNumbers("b", 30, 10, 20)]
    run = A.RunNumbers(train_acc=[0.99], val_acc=[0.7], val=(21, 30), test=(20, 24),
                       classes=classes, confused=[("a", "b", 50)], leaks={"dups": 2})
    lines = A.advise(run)
    assert len(lines) >= 6
    assert all(any(ch.isdigit() for ch in a.text) for a in lines)
    assert all(isinstance(a.as_dict(), dict) for a in lines)
