//! The noise rules as one automaton for the digest pass ([`super::digest`]): every location's
//! live rules (which rules can still match, and in which of their states) are interned once as
//! a [`StateId`], and each step met (a member name, an array index) is followed once per state
//! and then looked up. A document repeats its member names at every element of an array, so
//! after the first element a member costs a lookup instead of stepping every live rule
//! (`$..etag` is live everywhere) and comparing names.
//!
//! One [`RuleStates`] serves both bodies of a comparison. Bounds: at most [`MAX_STATES`] states
//! (a document that needs more gets no digest, and the structural comparison decides), far
//! above what a rule set of a few paths reaches in a response, and a fixed table of
//! [`NAME_SLOTS`] remembered member-name steps (two places for each; a step that finds both
//! taken by others is followed again, and takes the first).
//!
//! Member names are looked up by their digest (foldhash, 64 bits) mixed with the state: the
//! digest already counts two names with the same hash as the same name, so the lookup adds no
//! way of being wrong that the digest does not have (but for the same odds, 2^-64, of two
//! state-and-name pairs mixing to one key).

use super::path::{JsonPath, States, Step};
use crate::config::CompareConfig;

/// Distinct rule states one comparison may intern.
pub(crate) const MAX_STATES: usize = 256;
/// Member-name steps one comparison remembers at most.
pub(crate) const NAME_SLOTS: usize = 256;

/// An interned set of live rules; [`StateId::DEAD`] has none (every rule died above it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct StateId(u32);

impl StateId {
    pub(crate) const DEAD: StateId = StateId(0);
}

/// Where a step leads: the child's state, and whether an `ignore` rule selects the child itself
/// (then nothing below it counts) or an `unordered` rule does (an array compared as a multiset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Child {
    pub(crate) state: StateId,
    pub(crate) ignored: bool,
    pub(crate) unordered: bool,
}

impl Child {
    const DEAD: Child = Child {
        state: StateId::DEAD,
        ignored: false,
        unordered: false,
    };
}

#[derive(Clone, Copy)]
struct NameSlot {
    key: u64,
    child: Child,
    used: bool,
}

impl NameSlot {
    const EMPTY: NameSlot = NameSlot {
        key: 0,
        child: Child::DEAD,
        used: false,
    };
}

struct State {
    /// The live rules: (index into the rule list, the rule's automaton states), in rule order.
    live: Vec<(u16, States)>,
    /// Whether some live rule selects one index (`[3]`): then elements step differently.
    by_index: bool,
    /// The step to any element, once followed (when not `by_index`).
    element: Option<Child>,
}

pub(crate) struct RuleStates<'r> {
    /// `ignore` rules first, then `unordered` ones.
    rules: Vec<&'r JsonPath>,
    ignores: usize,
    states: Vec<State>,
    /// Member-name steps followed so far: [`name_key`] → child, each key in one of two slots
    /// (its top 8 bits, with the last bit either way).
    names: Vec<NameSlot>,
    /// Scratch for a step being followed.
    scratch: Vec<(u16, States)>,
}

impl<'r> RuleStates<'r> {
    pub(crate) fn new(config: &'r CompareConfig) -> Self {
        let rules: Vec<&JsonPath> = config.ignore.iter().chain(&config.unordered).collect();
        let dead = State {
            live: Vec::new(),
            by_index: false,
            element: Some(Child::DEAD),
        };
        Self {
            rules,
            ignores: config.ignore.len(),
            states: vec![dead],
            names: vec![NameSlot::EMPTY; NAME_SLOTS],
            scratch: Vec::new(),
        }
    }

    /// The document root (`None` when the rule list is too long to number).
    pub(crate) fn root(&mut self) -> Option<Child> {
        self.scratch.clear();
        for index in 0..self.rules.len() {
            self.scratch
                .push((u16::try_from(index).ok()?, JsonPath::START));
        }
        self.intern()
    }

    /// One member down from `state`, the member's name (UTF-8) given with its digest.
    #[inline(always)]
    pub(crate) fn member(
        &mut self,
        state: StateId,
        name: &[u8],
        name_digest: u64,
    ) -> Option<Child> {
        if state == StateId::DEAD {
            return Some(Child::DEAD);
        }
        let key = name_key(state, name_digest);
        let slot = (key >> 56) as usize;
        for at in [slot, slot ^ 1] {
            if let Some(entry) = self.names.get(at).filter(|e| e.used && e.key == key) {
                return Some(entry.child);
            }
        }
        let child = self.follow(state, Step::Key(std::str::from_utf8(name).ok()?))?;
        let free = [slot, slot ^ 1]
            .into_iter()
            .find(|at| self.names.get(*at).is_some_and(|e| !e.used))
            .unwrap_or(slot);
        if let Some(entry) = self.names.get_mut(free) {
            *entry = NameSlot {
                key,
                child,
                used: true,
            };
        }
        Some(child)
    }

    /// One element down from `state`, at `index`.
    #[inline(always)]
    pub(crate) fn element(&mut self, state: StateId, index: usize) -> Option<Child> {
        let at = self.states.get(state.0 as usize)?;
        if let Some(child) = at.element {
            return Some(child);
        }
        let by_index = at.by_index;
        let child = self.follow(state, Step::Index(index))?;
        if !by_index {
            self.states.get_mut(state.0 as usize)?.element = Some(child);
        }
        Some(child)
    }

    /// Steps every live rule of `state` and interns what is left alive (once per step and
    /// state met, mostly: out of the hot path).
    #[cold]
    fn follow(&mut self, state: StateId, step: Step<'_>) -> Option<Child> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        for &(rule, states) in &self.states.get(state.0 as usize)?.live {
            let next = self.rules.get(usize::from(rule))?.step(states, step);
            if next != 0 {
                scratch.push((rule, next));
            }
        }
        self.scratch = scratch;
        self.intern()
    }

    /// The state of the live rules in `scratch`, interned, with what they select there.
    fn intern(&mut self) -> Option<Child> {
        let (mut ignored, mut unordered, mut by_index) = (false, false, false);
        for &(rule, states) in &self.scratch {
            let path = self.rules.get(usize::from(rule))?;
            if path.selects(states) {
                if usize::from(rule) < self.ignores {
                    ignored = true;
                } else {
                    unordered = true;
                }
            }
            by_index |= path.selects_an_index(states);
        }
        let found = self
            .states
            .iter()
            .position(|state| state.live == self.scratch);
        let index = match found {
            Some(index) => index,
            None if self.states.len() < MAX_STATES => {
                self.states.push(State {
                    live: self.scratch.clone(),
                    by_index,
                    element: None,
                });
                self.states.len() - 1
            }
            None => return None,
        };
        Some(Child {
            state: StateId(u32::try_from(index).ok()?),
            ignored,
            unordered,
        })
    }
}

/// The key of a member-name step: the name's digest (already a hash) and the state, mixed.
fn name_key(state: StateId, name_digest: u64) -> u64 {
    name_digest ^ u64::from(state.0).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}
