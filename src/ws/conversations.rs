//! Multi-turn memory: the turns of each conversation, keyed by client id and
//! `conversation_id`, kept in memory and bounded four ways — turns per
//! conversation, conversations per client (least recently used evicted),
//! idle expiry, and a global byte cap over every client's text (the least
//! recently used conversation anywhere is dropped first: with open
//! enrollment the per-client caps mean nothing, since every new client id
//! gets its own). A chat without a `conversation_id` stands alone and is not
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

impl Turn {
    fn bytes(&self) -> usize {
        self.user.len() + self.assistant.len()
    }
}

struct Conversation {
    turns: Vec<Turn>,
    last_used: Instant,
    /// Text bytes of `turns`.
    bytes: usize,
}

/// How much history is kept, from `[ollama]` (`history_turns`,
/// `max_conversations_per_client`, `conversation_idle_secs`,
/// `max_conversation_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub turns: usize,
    pub per_client: usize,
    pub idle: Duration,
    /// Text bytes of every conversation of every client together.
    pub total_bytes: usize,
}

#[derive(Default)]
struct Inner {
    clients: HashMap<String, HashMap<String, Conversation>>,
    /// Sum of every conversation's `bytes`.
    bytes: usize,
}

impl Inner {
    /// Drop `client`'s conversations idle for `idle` or longer.
    fn expire(&mut self, client: &str, idle: Duration) {
        if let Some(convs) = self.clients.get_mut(client) {
            let mut freed = 0;
            convs.retain(|_, c| {
                let keep = c.last_used.elapsed() < idle;
                if !keep {
                    freed += c.bytes;
                }
                keep
            });
            self.bytes -= freed;
        }
    }

    fn remove(&mut self, client: &str, conversation: &str) {
        if let Some(convs) = self.clients.get_mut(client) {
            if let Some(c) = convs.remove(conversation) {
                self.bytes -= c.bytes;
            }
            if convs.is_empty() {
                self.clients.remove(client);
            }
        }
    }

    /// Drop the least recently used conversation of any client.
    fn evict_oldest(&mut self) -> bool {
        let oldest = self
            .clients
            .iter()
            .flat_map(|(client, convs)| convs.iter().map(move |(id, c)| (c.last_used, client, id)))
            .min_by_key(|(t, _, _)| *t)
            .map(|(_, client, id)| (client.clone(), id.clone()));
        match oldest {
            Some((client, id)) => {
                self.remove(&client, &id);
                true
            }
            None => false,
        }
    }
}

/// Every client's conversations.
#[derive(Default)]
pub struct ConversationStore {
    inner: Mutex<Inner>,
}

impl ConversationStore {
    /// The earlier turns of `(client, conversation)` as chat messages, oldest
    /// first; empty for a new or expired conversation.
    pub fn history(&self, client: &str, conversation: &str, limits: Bounds) -> Vec<ChatMessage> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.expire(client, limits.idle);
        let Some(c) = g
            .clients
            .get_mut(client)
            .and_then(|convs| convs.get_mut(conversation))
        else {
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

    /// Append a finished turn, then drop the least recently used
    /// conversations (of any client) while the store holds more than
    /// `limits.total_bytes`.
    pub fn record(&self, client: &str, conversation: &str, turn: Turn, limits: Bounds) {
        if limits.turns == 0 {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.expire(client, limits.idle);
        let convs = g.clients.entry(client.to_string()).or_default();
        let mut freed = 0;
        if !convs.contains_key(conversation) && convs.len() >= limits.per_client {
            if let Some(oldest) = convs
                .iter()
                .min_by_key(|(_, c)| c.last_used)
                .map(|(k, _)| k.clone())
            {
                freed += convs.remove(&oldest).map_or(0, |c| c.bytes);
            }
        }
        let c = convs
            .entry(conversation.to_string())
            .or_insert_with(|| Conversation {
                turns: Vec::new(),
                last_used: Instant::now(),
                bytes: 0,
            });
        let added = turn.bytes();
        c.bytes += added;
        c.turns.push(turn);
        if c.turns.len() > limits.turns {
            let excess = c.turns.len() - limits.turns;
            let gone: usize = c.turns.drain(..excess).map(|t| t.bytes()).sum();
            c.bytes -= gone;
            freed += gone;
        }
        c.last_used = Instant::now();
        g.bytes = g.bytes + added - freed;
        while g.bytes > limits.total_bytes && g.evict_oldest() {}
    }

    /// Drop expired conversations of every client (called periodically).
    pub fn sweep(&self, idle: Duration) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let clients: Vec<String> = g.clients.keys().cloned().collect();
        for c in clients {
            g.expire(&c, idle);
        }
        g.clients.retain(|_, convs| !convs.is_empty());
    }

    /// Number of conversations held (all clients).
    pub fn len(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.clients.values().map(HashMap::len).sum()
    }

    /// Text bytes held (all clients).
    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bytes
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
        total_bytes: 1 << 20,
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
    fn global_byte_cap_drops_oldest_conversations_of_any_client() {
        let s = ConversationStore::default();
        let cap = Bounds {
            total_bytes: 100,
            ..L
        };
        let big = |n: u32| Turn {
            user: format!("{n:>20}"),
            assistant: "x".repeat(20),
        }; // 40 bytes
        s.record("a", "1", big(0), cap);
        s.record("b", "1", big(1), cap);
        assert_eq!(s.bytes(), 80);
        // A third client (open enrollment: any id) pushes the oldest out.
        s.record("c", "1", big(2), cap);
        assert_eq!(s.bytes(), 80);
        assert!(s.history("a", "1", cap).is_empty());
        assert!(!s.history("b", "1", cap).is_empty());
        // Turn and per-client trimming keep the count exact.
        for n in 0..5 {
            s.record("c", "1", turn(n), cap);
        }
        let held: usize = ["b", "c"]
            .iter()
            .map(|c| {
                s.history(c, "1", cap)
                    .iter()
                    .map(|m| m.content.len())
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(s.bytes(), held);
        s.sweep(Duration::ZERO);
        assert_eq!((s.len(), s.bytes()), (0, 0));
    }

    #[test]
    fn idle_conversations_expire() {
        let s = ConversationStore::default();
        s.record("c", "a", turn(0), L);
        s.sweep(Duration::ZERO);
        assert!(s.is_empty());
    }
}
