//! The report of `ferrohub system check` and `ferrohub edge check`: checks grouped in sections,
//! each passing (✓), failing with its fix (✗ →), a warning with its fix (! →) or a note (·),
//! printed for a terminal or as JSON (`[{"id", "ok", "detail", "fix"}]`). One type, so both
//! commands look and count alike.

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Pass,
    Warn,
    Fail,
    /// Not a check: something the reader should know (e.g. why a check was skipped).
    Note,
}

/// One check's outcome. A warning passes (`ok`) but carries a fix.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Outcome {
    pub(crate) id: &'static str,
    pub(crate) ok: bool,
    pub(crate) detail: String,
    pub(crate) fix: String,
    #[serde(skip)]
    pub(crate) level: Level,
    #[serde(skip)]
    section: &'static str,
}

/// The outcomes in order; `section` names the heading of those added next.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) items: Vec<Outcome>,
    pub(crate) section: &'static str,
}

impl Report {
    pub(crate) fn new(section: &'static str) -> Self {
        Self {
            items: Vec::new(),
            section,
        }
    }

    fn push(&mut self, id: &'static str, level: Level, detail: String, fix: String) {
        let section = self.section;
        self.items.push(Outcome {
            id,
            ok: level != Level::Fail,
            detail,
            fix,
            level,
            section,
        });
    }

    /// A check that passed (`ok`) or failed with `fix`.
    pub(crate) fn add(&mut self, id: &'static str, ok: bool, detail: String, fix: String) {
        if ok {
            self.push(id, Level::Pass, detail, String::new());
        } else {
            self.push(id, Level::Fail, detail, fix);
        }
    }

    pub(crate) fn warn(&mut self, id: &'static str, detail: String, fix: String) {
        self.push(id, Level::Warn, detail, fix);
    }

    /// A [`crate::system_status::Finding`]: passed, a warning, or failed.
    pub(crate) fn finding(&mut self, id: &'static str, f: crate::system_status::Finding) {
        if f.warning {
            self.warn(id, f.what, f.next);
        } else {
            self.add(id, f.ok, f.what, f.next);
        }
    }

    pub(crate) fn note(&mut self, id: &'static str, detail: String) {
        self.push(id, Level::Note, detail, String::new());
    }

    pub(crate) fn failed(&self) -> usize {
        self.items.iter().filter(|o| !o.ok).count()
    }

    /// Sections, then ✓ / ✗ (with → the fix) / ! (with → the fix) / ·, then the counts.
    pub(crate) fn print(&self) {
        let mut section = "";
        for o in &self.items {
            if o.section != section {
                section = o.section;
                println!("{section}");
            }
            match o.level {
                Level::Pass => println!("  ✓ {}", o.detail),
                Level::Warn => println!("  ! {}\n      → {}", o.detail, o.fix),
                Level::Fail => println!("  ✗ {}\n      → {}", o.detail, o.fix),
                Level::Note => println!("  · {}", o.detail),
            }
        }
        let warnings = self.items.iter().filter(|o| o.level == Level::Warn).count();
        println!("{} check(s) failed, {warnings} warning(s)", self.failed());
    }

    /// The terminal form, or with `json` the outcomes as a JSON array.
    pub(crate) fn emit(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(&self.items)?);
        } else {
            self.print();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_and_notes_pass_failures_count() {
        let mut r = Report::new("A");
        r.add("one", true, "fine".into(), "unused".into());
        r.warn("two", "soon".into(), "renew".into());
        r.section = "B";
        r.add("three", false, "broken".into(), "mend it".into());
        r.note("four", "skipped".into());
        assert_eq!(r.failed(), 1);
        let v = serde_json::to_value(&r.items).unwrap_or_default();
        assert_eq!(v[0]["fix"], "", "a passing check carries no fix");
        assert_eq!(v[1]["ok"], true);
        assert_eq!(v[2]["ok"], false);
        assert_eq!(v[2]["fix"], "mend it");
        assert_eq!(v.as_array().map(Vec::len), Some(4));
    }
}
