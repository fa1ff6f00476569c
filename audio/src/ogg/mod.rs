//! Ogg Opus, the container of every Loa bulletin (RFC 7845 on top of RFC 3533). [`OggOpusWriter`] frames
//! Opus packets into pages of at most about a second of audio each, with pre-skip and end trim;
//! [`OpusStreamDecoder`] and [`OggOpusDemuxer`] read a file back, also while it is still arriving, and
//! [`decode_ogg_opus`] decodes a whole file. Only mono and stereo streams (channel mapping family 0) are
//! supported; other logical streams in the same file are ignored.

mod head;
mod page;
mod reader;
mod writer;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tool_tests;

pub use head::{OpusHead, OpusTags};
pub use page::{crc32, Page, Piece, FLAG_BOS, FLAG_CONTINUED, FLAG_EOS, NO_GRANULE};
pub use reader::{decode_ogg_opus, is_ogg_opus, DecodedOpus, OggOpusDemuxer, OpusStreamDecoder};
pub use writer::OggOpusWriter;
