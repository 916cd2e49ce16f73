//! A fake Ollama (placeholder; the streaming work replaces it).
#![allow(dead_code)]
