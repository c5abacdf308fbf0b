//! `xtask/goals.toml`: the goals the bench report judges its figures
//! against, each with its meaning, read at the start of `cargo xtask bench`.

use crate::root;
use serde::Deserialize;
use std::collections::BTreeMap;

/// How a figure is compared with its goal's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum Test {
    /// Met when the figure is below the limit.
    #[serde(rename = "<")]
    Below,
    /// Met when the figure is at most the limit.
    #[serde(rename = "<=")]
    AtMost,
    /// Met when the figure is at least the limit.
    #[serde(rename = ">=")]
    AtLeast,
}

/// One goal of the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Goal {
    /// What the goal protects, in words.
    pub(crate) meaning: String,
    /// What is measured, and the unit of `limit`.
    pub(crate) figure: String,
    pub(crate) test: Test,
    pub(crate) limit: f64,
    /// How the report writes the goal.
    pub(crate) shown: String,
}

impl Goal {
    /// Whether `figure` meets the goal.
    pub(crate) fn met(&self, figure: f64) -> bool {
        match self.test {
            Test::Below => figure < self.limit,
            Test::AtMost => figure <= self.limit,
            Test::AtLeast => figure >= self.limit,
        }
    }
}

/// Every goal, by name.
#[derive(Debug)]
pub(crate) struct Goals(BTreeMap<String, Goal>);

impl Goals {
    /// Reads `xtask/goals.toml`.
    pub(crate) fn load() -> Result<Self, String> {
        let path = root().join("xtask/goals.toml");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let goals: BTreeMap<String, Goal> = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, g) in &goals {
            if g.meaning.trim().is_empty() || g.figure.trim().is_empty() {
                return Err(format!("goal `{name}` must say its meaning and its figure"));
            }
        }
        Ok(Self(goals))
    }

    /// The goal named `name`.
    pub(crate) fn get(&self, name: &str) -> Result<&Goal, String> {
        self.0
            .get(name)
            .ok_or_else(|| format!("xtask/goals.toml has no goal `{name}`"))
    }

    /// The names of every goal in the file.
    #[cfg(test)]
    pub(crate) fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_goals_file_parses_and_every_shown_goal_states_its_test() {
        let goals = Goals::load().expect("xtask/goals.toml parses");
        for name in goals.names() {
            let g = goals.get(name).expect("listed");
            let op = match g.test {
                Test::Below => "< ",
                Test::AtMost => "<= ",
                Test::AtLeast => ">= ",
            };
            assert!(g.shown.starts_with(op), "{name}: {:?} vs {op:?}", g.shown);
        }
    }

    #[test]
    fn a_goal_is_met_on_the_right_side_of_its_limit() {
        let goals = Goals::parse(
            "[a]\nmeaning = \"m\"\nfigure = \"f\"\ntest = \"<\"\nlimit = 1.0\nshown = \"< 1\"\n\
             [b]\nmeaning = \"m\"\nfigure = \"f\"\ntest = \">=\"\nlimit = 0.95\nshown = \">= 95 %\"\n",
        )
        .expect("parses");
        let a = goals.get("a").expect("a");
        assert!(a.met(0.99) && !a.met(1.0));
        let b = goals.get("b").expect("b");
        assert!(b.met(0.95) && !b.met(0.949));
        assert!(goals.get("c").is_err());
    }

    #[test]
    fn a_goal_without_meaning_is_refused() {
        let err = Goals::parse(
            "[a]\nmeaning = \" \"\nfigure = \"f\"\ntest = \"<\"\nlimit = 1\nshown = \"< 1\"\n",
        )
        .expect_err("refused");
        assert!(err.contains("meaning"), "{err}");
        assert!(
            Goals::parse("[a]\nmeaning = \"m\"\n").is_err(),
            "fields missing"
        );
    }
}
