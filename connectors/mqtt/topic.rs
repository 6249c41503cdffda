//! Topic patterns with named captures (`tele/{device}/SENSOR`, `zigbee2mqtt/{device}`,
//! `shellies/{device}/relay/{relay}/power`) and the name templates that use the captures
//! (`"device": "{device}"`, `"channel": "relay{relay}_power"`). Pure: compiled at config load,
//! matched per message without allocating.

use std::ops::Range;

/// Most captures a pattern may have.
pub const MAX_CAPTURES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// Exactly this text.
    Lit(Box<str>),
    /// Any one level, captured as capture `n` when named.
    One(Option<u8>),
    /// Any remaining levels (`#`, last only), possibly none.
    Rest,
}

/// A compiled topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    levels: Box<[Level]>,
    names: Box<[Box<str>]>,
    /// The MQTT filter to subscribe to (captures as `+`).
    pub filter: String,
}

/// Where the captures of one match are in the topic.
#[derive(Debug, Default)]
pub struct Captures {
    spans: [Range<usize>; MAX_CAPTURES],
}

impl Captures {
    /// The text of capture `i` in `topic`.
    pub fn get<'t>(&self, topic: &'t str, i: usize) -> &'t str {
        topic.get(self.spans[i].clone()).unwrap_or("")
    }
}

impl Pattern {
    /// Compiles `pattern`: levels separated by `/`, each a literal, `+`, `#` (last only), or a
    /// named capture `{name}` standing for a whole level.
    pub fn new(pattern: &str) -> Result<Pattern, String> {
        if pattern.is_empty() {
            return Err("must not be empty".into());
        }
        let parts: Vec<&str> = pattern.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        let mut names: Vec<Box<str>> = Vec::new();
        let mut filter = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let level = if *p == "#" {
                if i + 1 != parts.len() {
                    return Err(format!("\"{pattern}\": # must be the last level"));
                }
                Level::Rest
            } else if *p == "+" {
                Level::One(None)
            } else if let Some(name) = p.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "\"{pattern}\": capture {{{name}}} must be a name of letters, digits and _"
                    ));
                }
                if names.iter().any(|n| &**n == name) {
                    return Err(format!("\"{pattern}\": capture {{{name}}} appears twice"));
                }
                if names.len() == MAX_CAPTURES {
                    return Err(format!("\"{pattern}\": at most {MAX_CAPTURES} captures"));
                }
                names.push(name.into());
                Level::One(Some(names.len() as u8 - 1))
            } else if p.contains(['{', '}', '+', '#']) {
                return Err(format!(
                    "\"{pattern}\": level \"{p}\": a capture {{name}}, + or # must be a whole level"
                ));
            } else {
                Level::Lit((*p).into())
            };
            filter.push(match level {
                Level::Lit(_) => *p,
                Level::One(_) => "+",
                Level::Rest => "#",
            });
            levels.push(level);
        }
        Ok(Pattern {
            levels: levels.into(),
            names: names.into(),
            filter: filter.join("/"),
        })
    }

    /// The index of capture `name`.
    pub fn capture(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| &**n == name)
    }

    /// True when the pattern could match topics starting with `prefix` (levels ending in
    /// `/`): used to keep a connector off osgate's own topics.
    pub fn may_match_prefix(&self, prefix: &str) -> bool {
        let mut levels = self.levels.iter();
        for want in prefix.trim_end_matches('/').split('/') {
            match levels.next() {
                None => return false,
                Some(Level::Rest) => return true,
                Some(Level::One(_)) => {}
                Some(Level::Lit(l)) if &**l == want => {}
                Some(Level::Lit(_)) => return false,
            }
        }
        true
    }

    /// Matches `topic`, filling `caps`. Topics starting with `$` (broker internals) match
    /// only a pattern whose first level is that literal (MQTT's rule for wildcards).
    pub fn matches(&self, topic: &str, caps: &mut Captures) -> bool {
        let mut pos = 0;
        let mut parts = topic.split('/');
        for (i, level) in self.levels.iter().enumerate() {
            if i == 0 && topic.starts_with('$') && !matches!(level, Level::Lit(_)) {
                return false;
            }
            let Some(part) = parts.next() else {
                // `a/#` matches `a` too.
                return matches!(level, Level::Rest);
            };
            match level {
                Level::Rest => return true,
                Level::Lit(l) if &**l != part => return false,
                Level::Lit(_) | Level::One(None) => {}
                Level::One(Some(n)) => caps.spans[*n as usize] = pos..pos + part.len(),
            }
            pos += part.len() + 1;
        }
        parts.next().is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Box<str>),
    Cap(usize),
}

/// A name made of literal text and captures: `"{device}"`, `"relay{relay}_power"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Box<[Part]>,
}

impl Template {
    /// Compiles `text` against the captures of `pattern`; the error names an unknown capture.
    pub fn new(text: &str, pattern: &Pattern) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].into()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("\"{text}\": unclosed {{"))?;
            let name = &rest[open + 1..open + close];
            let cap = pattern.capture(name).ok_or_else(|| {
                format!(
                    "\"{text}\": the topic has no capture {{{name}}} (it has: {})",
                    if pattern.names.is_empty() {
                        "none".to_string()
                    } else {
                        pattern
                            .names
                            .iter()
                            .map(|n| format!("{{{n}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )
            })?;
            parts.push(Part::Cap(cap));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("\"{text}\": unmatched }}"));
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.into()));
        }
        Ok(Template {
            parts: parts.into(),
        })
    }

    /// The fixed text when the template has no capture.
    pub fn fixed(&self) -> Option<&str> {
        match &*self.parts {
            [] => Some(""),
            [Part::Lit(l)] => Some(l),
            _ => None,
        }
    }

    /// Writes the name for `topic`'s captures into `out` (cleared first).
    pub fn render(&self, topic: &str, caps: &Captures, out: &mut String) {
        out.clear();
        for p in &*self.parts {
            match p {
                Part::Lit(l) => out.push_str(l),
                Part::Cap(i) => out.push_str(caps.get(topic, *i)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> Option<Vec<String>> {
        let p = Pattern::new(p).unwrap();
        let mut c = Captures::default();
        p.matches(t, &mut c).then(|| {
            (0..p.names.len())
                .map(|i| c.get(t, i).to_string())
                .collect()
        })
    }

    #[test]
    fn patterns_match_like_mqtt_filters() {
        assert_eq!(
            m("tele/{device}/SENSOR", "tele/boiler/SENSOR").unwrap(),
            ["boiler"]
        );
        assert!(m("tele/{device}/SENSOR", "tele/boiler/STATE").is_none());
        assert!(m("tele/{device}/SENSOR", "tele/boiler/SENSOR/x").is_none());
        assert!(m("tele/{device}/SENSOR", "tele/SENSOR").is_none());
        assert_eq!(
            m(
                "shellies/{device}/relay/{n}/power",
                "shellies/sh1/relay/0/power"
            )
            .unwrap(),
            ["sh1", "0"]
        );
        assert_eq!(
            m("zigbee2mqtt/{device}", "zigbee2mqtt/kitchen").unwrap(),
            ["kitchen"]
        );
        assert!(m("zigbee2mqtt/{device}", "zigbee2mqtt/bridge/state").is_none());
        assert!(m("a/#", "a").is_some());
        assert!(m("a/#", "a/b/c").is_some());
        assert!(m("a/+/c", "a//c").is_some());
        assert!(m("#", "$SYS/broker/load").is_none());
        assert!(m("+/broker", "$SYS/broker").is_none());
        assert!(m("$SYS/#", "$SYS/broker").is_some());
        let p = Pattern::new("tele/{device}/SENSOR").unwrap();
        assert_eq!(p.filter, "tele/+/SENSOR");
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(Pattern::new("a/#/b").unwrap_err().contains("last level"));
        assert!(Pattern::new("a/x{d}").unwrap_err().contains("whole level"));
        assert!(Pattern::new("a/{d}/{d}").unwrap_err().contains("twice"));
        assert!(Pattern::new("a/{}").is_err());
        assert!(Pattern::new("").is_err());
    }

    #[test]
    fn templates_render_captures() {
        let p = Pattern::new("shellies/{device}/relay/{relay}/power").unwrap();
        let t = Template::new("relay{relay}_power", &p).unwrap();
        let topic = "shellies/sh1/relay/2/power";
        let mut c = Captures::default();
        assert!(p.matches(topic, &mut c));
        let mut out = String::new();
        t.render(topic, &c, &mut out);
        assert_eq!(out, "relay2_power");
        assert_eq!(Template::new("power", &p).unwrap().fixed(), Some("power"));
        assert!(Template::new("{x}", &p)
            .unwrap_err()
            .contains("{device}, {relay}"));
        assert!(Template::new("{device", &p).is_err());
    }

    #[test]
    fn own_topics_are_recognised() {
        assert!(Pattern::new("#").unwrap().may_match_prefix("telemetry/gw/"));
        assert!(Pattern::new("+/gw/#")
            .unwrap()
            .may_match_prefix("telemetry/gw/"));
        assert!(Pattern::new("telemetry/{x}/#")
            .unwrap()
            .may_match_prefix("telemetry/gw/"));
        assert!(!Pattern::new("tele/#")
            .unwrap()
            .may_match_prefix("telemetry/gw/"));
        assert!(!Pattern::new("telemetry/other/#")
            .unwrap()
            .may_match_prefix("telemetry/gw/"));
    }
}
