//! Multi-turn memory: the turns of each conversation, keyed by client id and
//! `conversation_id`, kept in memory and bounded three ways — turns per
//! conversation, conversations per client (least recently used evicted) and
//! idle expiry. A chat without a `conversation_id` stands alone and is not
//! stored. Nothing here survives a restart (by design: see ADR 0003).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ollama::{ChatMessage, Role};

/// One user question and the assistant's answer.
#[derive(Debug, Clone)]
pub struct Turn {
    pub user: String,
    pub assistant: String,
}

struct Conversation {
    turns: Vec<Turn>,
    last_used: Instant,
}

/// How much history is kept, from `[ollama]` (`history_turns`,
/// `max_conversations_per_client`, `conversation_idle_secs`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub turns: usize,
    pub per_client: usize,
    pub idle: Duration,
}

/// Every client's conversations.
#[derive(Default)]
pub struct ConversationStore {
    inner: Mutex<HashMap<String, HashMap<String, Conversation>>>,
}

impl ConversationStore {
    /// The earlier turns of `(client, conversation)` as chat messages, oldest
    /// first; empty for a new or expired conversation.
    pub fn history(&self, client: &str, conversation: &str, limits: Bounds) -> Vec<ChatMessage> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(convs) = g.get_mut(client) else {
            return Vec::new();
        };
        convs.retain(|_, c| c.last_used.elapsed() < limits.idle);
        let Some(c) = convs.get_mut(conversation) else {
            return Vec::new();
        };
        c.last_used = Instant::now();
        let skip = c.turns.len().saturating_sub(limits.turns);
        c.turns[skip..]
            .iter()
            .flat_map(|t| {
                [
                    ChatMessage {
                        role: Role::User,
                        content: t.user.clone(),
                    },
                    ChatMessage {
                        role: Role::Assistant,
                        content: t.assistant.clone(),
                    },
                ]
            })
            .collect()
    }

    /// Append a finished turn.
    pub fn record(&self, client: &str, conversation: &str, turn: Turn, limits: Bounds) {
        if limits.turns == 0 {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let convs = g.entry(client.to_string()).or_default();
        convs.retain(|_, c| c.last_used.elapsed() < limits.idle);
        if !convs.contains_key(conversation) && convs.len() >= limits.per_client {
            if let Some(oldest) = convs
                .iter()
                .min_by_key(|(_, c)| c.last_used)
                .map(|(k, _)| k.clone())
            {
                convs.remove(&oldest);
            }
        }
        let c = convs
            .entry(conversation.to_string())
            .or_insert_with(|| Conversation {
                turns: Vec::new(),
                last_used: Instant::now(),
            });
        c.turns.push(turn);
        if c.turns.len() > limits.turns {
            let excess = c.turns.len() - limits.turns;
            c.turns.drain(..excess);
        }
        c.last_used = Instant::now();
    }

    /// Drop expired conversations of every client (called periodically).
    pub fn sweep(&self, idle: Duration) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for convs in g.values_mut() {
            convs.retain(|_, c| c.last_used.elapsed() < idle);
        }
        g.retain(|_, convs| !convs.is_empty());
    }

    /// Number of conversations held (all clients).
    pub fn len(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Bounds = Bounds {
        turns: 2,
        per_client: 2,
        idle: Duration::from_secs(60),
    };

    fn turn(n: u32) -> Turn {
        Turn {
            user: format!("q{n}"),
            assistant: format!("a{n}"),
        }
    }

    #[test]
    fn keeps_last_turns_per_conversation() {
        let s = ConversationStore::default();
        for n in 0..3 {
            s.record("c", "x", turn(n), L);
        }
        let h = s.history("c", "x", L);
        let texts: Vec<_> = h.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["q1", "a1", "q2", "a2"]);
        assert!(s.history("other-client", "x", L).is_empty());
    }

    #[test]
    fn evicts_least_recently_used_conversation() {
        let s = ConversationStore::default();
        s.record("c", "a", turn(0), L);
        s.record("c", "b", turn(1), L);
        let _ = s.history("c", "a", L); // a is now the most recent
        s.record("c", "c", turn(2), L);
        assert!(!s.history("c", "a", L).is_empty());
        assert!(s.history("c", "b", L).is_empty());
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn idle_conversations_expire() {
        let s = ConversationStore::default();
        s.record("c", "a", turn(0), L);
        s.sweep(Duration::ZERO);
        assert!(s.is_empty());
    }
}
