//! Loa's firmware simulator: many real receivers in one process, each behind an emulated bad link.
//!
//! Not built yet: it arrives with the bad-links and fleet issue, once the receiver library exists.
