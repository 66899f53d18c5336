//! Workload files with dependencies, sweeps and per-unit controls.

use super::*;

const LOCAL: &[Scheme] = &[Scheme::Local];
const PILOT: &str = "[[pilot]]\nresource = \"local://\"\n";

fn parse_in(dir: &Path, text: &str) -> Result<Workload, WorkloadError> {
    parse(
        &dir.join("work.toml"),
        &format!("{PILOT}{text}"),
        LOCAL,
        false,
    )
}

fn ok(text: &str) -> Workload {
    parse_in(Path::new("dir"), text).unwrap_or_else(|e| panic!("expected it to parse:\n{e}"))
}

fn err(text: &str) -> WorkloadError {
    match parse_in(Path::new("dir"), text) {
        Ok(w) => panic!("expected an error, got {w:?}"),
        Err(e) => e,
    }
}

/// (name, positions it runs after) of every unit, in the order they are submitted.
fn plan(w: &Workload) -> Vec<(String, Vec<u64>)> {
    w.units()
        .map(|u| (u.description.display_name().to_owned(), u.after))
        .collect()
}

#[test]
fn after_names_units_by_name_glob_tag_and_member() {
    let w = ok(r#"
[[unit]]
name = "prep-{i}"
executable = "/bin/true"
count = 2
tags = ["stage1"]

[[unit]]
name = "run-{i}"
executable = "/bin/true"
count = 2
after = ["prep-{i}"]

[[unit]]
name = "sum"
executable = "/bin/true"
after = ["run-*", "tag:stage1"]
"#);
    assert_eq!(
        plan(&w),
        [
            ("prep-0".to_owned(), vec![]),
            ("prep-1".to_owned(), vec![]),
            ("run-0".to_owned(), vec![0]),
            ("run-1".to_owned(), vec![1]),
            ("sum".to_owned(), vec![0, 1, 2, 3]),
        ]
    );
    assert_eq!(w.dependencies(), 6);
}

#[test]
fn units_named_later_in_the_file_are_submitted_first() {
    let w = ok(r#"
[[unit]]
name = "last"
executable = "/bin/true"
after = ["first"]

[[unit]]
name = "first"
executable = "/bin/true"
"#);
    assert_eq!(
        plan(&w),
        [("first".to_owned(), vec![]), ("last".to_owned(), vec![0])]
    );
}

#[test]
fn a_cycle_is_refused_naming_its_units_and_lines() {
    let e = err(r#"
[[unit]]
name = "a"
executable = "/bin/true"
after = ["b"]

[[unit]]
name = "b"
executable = "/bin/true"
after = ["a"]
"#);
    let text = e.to_string();
    assert!(text.contains("cycle"), "{text}");
    assert!(text.contains("`a` (the [[unit]] at line 4)"), "{text}");
    assert!(text.contains("`b` (the [[unit]] at line 9)"), "{text}");
    assert_eq!(e.line(), Some(7));
}

#[test]
fn a_cycle_through_data_is_refused_too() {
    let e = err(r#"
[[unit]]
name = "a"
executable = "/bin/true"
after = ["b"]
output_data = [{ name = "x", files = ["x"] }]

[[unit]]
name = "b"
executable = "/bin/true"
input_data = ["x"]
"#);
    let text = e.to_string();
    assert!(text.contains("reads `x`, made by"), "{text}");
}

#[test]
fn after_that_matches_nothing_or_the_unit_itself_is_refused_where_it_is_written() {
    let e = err("[[unit]]\nname = \"a\"\nexecutable = \"/bin/true\"\nafter = [\"nope-*\"]\n");
    assert!(e.message().contains("matches no unit"), "{e}");
    assert_eq!(e.line(), Some(6));
    let e = err(
        "[[unit]]\nname = \"a-{i}\"\nexecutable = \"/bin/true\"\ncount = 2\nafter = [\"a-*\"]\n",
    );
    assert!(e.message().contains("cannot run after itself"), "{e}");
    let e = err("[[unit]]\nname = \"a\"\nexecutable = \"/bin/true\"\nafter = [\"tag:\"]\n");
    assert!(e.message().contains("is empty"), "{e}");
    let e = err("[[unit]]\nname = \"a\"\nexecutable = \"/bin/true\"\nafter = [\"[x\"]\n");
    assert!(e.message().contains("not a valid pattern"), "{e}");
}

#[test]
fn per_unit_controls_reach_the_description() {
    let w = ok(r#"
[[unit]]
executable = "/bin/true"
retries = 2
retry_on_exit_codes = [3, 4]
on_dependency_failure = "run"
timeout = "1m"
max_fails = 5
count = 10
"#);
    let d = w.units().next().expect("a unit").description;
    assert_eq!(d.retries, 2);
    assert_eq!(d.retry_on_exit_codes, [3, 4]);
    assert_eq!(d.on_dependency_failure, OnDependencyFailure::Run);
    assert_eq!(w.ensembles[0].max_fails, Some(5));
    let e = err("[[unit]]\nexecutable = \"/bin/true\"\non_dependency_failure = \"skip\"\n");
    assert!(e.message().contains("\"cancel\""), "{e}");
    let e = err("[[unit]]\nexecutable = \"/bin/true\"\nretry_on_exit_codes = [1]\n");
    assert!(e.message().contains("needs `retries`"), "{e}");
    let e = err("[[unit]]\nexecutable = \"/bin/true\"\nretries = 1\nretry_on_exit_codes = []\n");
    assert!(e.message().contains("is empty"), "{e}");
    let e = err("[[unit]]\nexecutable = \"/bin/true\"\nretries = 1\nretry_on_exit_codes = [0]\n");
    assert!(e.message().contains("1 to 255"), "{e}");
    let e = err("[[unit]]\nexecutable = \"/bin/true\"\nmax_fails = 0\n");
    assert!(e.message().contains("max_fails"), "{e}");
}

#[test]
fn a_pilot_s_pre_exec_reaches_its_description() {
    let w = parse(
        Path::new("w.toml"),
        "[[pilot]]\nresource = \"local://\"\npre_exec = [\"module load x\"]\n\
         [[unit]]\nexecutable = \"/bin/true\"\n",
        LOCAL,
        false,
    )
    .expect("parses");
    assert_eq!(w.pilots[0].pre_exec, ["module load x"]);
}

#[test]
fn a_sweep_of_lists_makes_every_combination() {
    let w = ok(r#"
[[unit]]
name = "sim-{a}-{b}"
executable = "/bin/echo"
arguments = ["{a}", "{b}", "{i}", "${{HOME}}", "{c}"]
[unit.parameters]
a = [1, 2, 3]
b = ["x", "y"]
"#);
    let units: Vec<ComputeUnitDescription> = w.units().map(|u| u.description).collect();
    assert_eq!(units.len(), 6);
    assert_eq!(units[0].name.as_deref(), Some("sim-1-x"));
    assert_eq!(units[5].name.as_deref(), Some("sim-3-y"));
    assert_eq!(units[3].arguments, ["2", "y", "3", "${HOME}", "{c}"]);
}

#[test]
fn a_sweep_from_a_csv_makes_a_unit_per_row_and_a_bad_row_names_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("p.csv"),
        "alpha,beta\n0.1,x\n0.2,\"y, z\"\n",
    )
    .unwrap();
    let w = parse_in(
        dir.path(),
        "[[unit]]\nexecutable = \"/bin/echo\"\narguments = [\"{alpha}\", \"{beta}\"]\n\
         parameters_from = \"p.csv\"\n",
    )
    .expect("parses");
    let args: Vec<Vec<String>> = w.units().map(|u| u.description.arguments).collect();
    assert_eq!(args, [vec!["0.1", "x"], vec!["0.2", "y, z"]]);

    std::fs::write(dir.path().join("bad.csv"), "a,b\n1,2\n3\n").unwrap();
    let e = parse_in(
        dir.path(),
        "[[unit]]\nexecutable = \"/bin/echo\"\nparameters_from = \"bad.csv\"\n",
    )
    .expect_err("a short row");
    assert!(
        e.message()
            .contains("bad.csv line 3: this row has 1 fields, the header 2"),
        "{e}"
    );
    assert_eq!(e.line(), Some(5));
}

#[test]
fn a_sweep_from_lines_gives_each_line_and_count_is_refused_beside_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("inputs.txt"), "a.dat\n\nb.dat\n").unwrap();
    let w = parse_in(
        dir.path(),
        "[[unit]]\nexecutable = \"/bin/echo\"\narguments = [\"{line}\"]\n\
         parameters_from = \"inputs.txt\"\n",
    )
    .expect("parses");
    let args: Vec<Vec<String>> = w.units().map(|u| u.description.arguments).collect();
    assert_eq!(args, [vec!["a.dat"], vec!["b.dat"]]);
    let e = parse_in(
        dir.path(),
        "[[unit]]\nexecutable = \"/bin/echo\"\ncount = 3\nparameters_from = \"inputs.txt\"\n",
    )
    .expect_err("count beside a sweep");
    assert!(e.message().contains("comes from the sweep"), "{e}");
    let e = parse_in(
        dir.path(),
        "[[unit]]\nexecutable = \"/bin/echo\"\nparameters_from = \"missing.csv\"\n",
    )
    .expect_err("no such file");
    assert!(
        e.message()
            .contains("cannot read the parameters file missing.csv"),
        "{e}"
    );
}

#[test]
fn sweep_parameters_are_refused_in_data_unit_names_and_bad_names_are_refused() {
    let e = err(r#"
[[unit]]
executable = "/bin/true"
output_data = [{ name = "out-{a}", files = ["*"] }]
[unit.parameters]
a = [1, 2]
"#);
    assert!(e.message().contains("cannot hold a sweep parameter"), "{e}");
    let e = err("[[unit]]\nexecutable = \"/bin/true\"\nparameters = { i = [1] }\n");
    assert!(e.message().contains("index"), "{e}");
    let e = err("[[unit]]\nexecutable = \"/bin/true\"\nparameters = { a = [] }\n");
    assert!(e.message().contains("no values"), "{e}");
    let e = err("[[unit]]\nexecutable = \"/bin/true\"\nparameters = { a = [[1]] }\n");
    assert!(e.message().contains("text, a number"), "{e}");
}

#[test]
fn a_sweep_member_whose_outputs_collide_is_refused() {
    let e = err(r#"
[[unit]]
executable = "/bin/true"
stdout = "{a}"
stderr = "err"
[unit.parameters]
a = ["out", "err"]
"#);
    assert!(e.message().contains("member 1"), "{e}");
}

#[test]
fn a_thousand_units_with_random_dependencies_load_and_order() {
    // Every unit runs after three earlier ones, written in reverse file order.
    let mut text = String::new();
    let n = 1000;
    for k in (0..n).rev() {
        text.push_str(&format!(
            "[[unit]]\nname = \"n{k}\"\nexecutable = \"/bin/true\"\n"
        ));
        if k >= 3 {
            let a = (k * 7 + 1) % k;
            let b = (k * 13 + 5) % k;
            let c = k - 1;
            text.push_str(&format!("after = [\"n{a}\", \"n{b}\", \"n{c}\"]\n"));
        }
    }
    let w = ok(&text);
    let plan = plan(&w);
    let position: HashMap<String, usize> = plan
        .iter()
        .enumerate()
        .map(|(k, (name, _))| (name.clone(), k))
        .collect();
    for (k, (_, after)) in plan.iter().enumerate() {
        for p in after {
            assert!(
                (*p as usize) < k,
                "unit {k} runs after {p}, submitted later"
            );
        }
    }
    assert!(position["n0"] < position["n999"]);
}

#[test]
fn a_parameters_file_that_is_not_a_regular_file_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.csv")).unwrap();
    for file in ["zero.csv", "/dev/zero", "."] {
        let e = parse_in(
            dir.path(),
            &format!("[[unit]]\nexecutable = \"/bin/echo\"\nparameters_from = \"{file}\"\n"),
        )
        .expect_err("not a regular file");
        assert!(e.message().contains("not a regular file"), "{e}");
    }
}

#[test]
fn a_long_cycle_is_named_by_its_first_units_and_its_length() {
    let n = 500;
    let mut text = String::new();
    for k in 0..n {
        text.push_str(&format!(
            "[[unit]]\nname = \"r{k}\"\nexecutable = \"/bin/true\"\nafter = [\"r{}\"]\n",
            (k + 1) % n
        ));
    }
    let e = err(&text);
    assert!(
        e.message().contains("(500 units in the cycle in all)"),
        "{e}"
    );
    assert!(e.message().len() < 2_000, "{}", e.message().len());
}

#[test]
fn per_unit_globs_are_refused_past_their_budget_and_retries_are_capped() {
    let e = err(
        "[[unit]]\nname = \"a-{i}\"\nexecutable = \"/bin/true\"\ncount = 10000\n\
         [[unit]]\nname = \"b-{i}\"\nexecutable = \"/bin/true\"\ncount = 10000\n\
         after = [\"[a]-{i}\"]\n",
    );
    assert!(e.message().contains("name units exactly"), "{e}");
    let e = err("[[unit]]\nexecutable = \"/bin/true\"\nretries = 101\n");
    assert!(e.message().contains("at most 100"), "{e}");
}
