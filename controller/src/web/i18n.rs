//! Every word of the console in Vietnamese (the default) and English, in one table: a page gets the words of
//! its language as `tr` (`{{ tr.save }}`), and a test checks that every word a template uses is here.

use std::collections::BTreeMap;

/// A console language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// Tiếng Việt.
    #[default]
    Vi,
    /// English.
    En,
}

impl Lang {
    /// From a code (`vi`, `en`); anything else is Vietnamese.
    pub fn from_code(code: &str) -> Lang {
        if code.eq_ignore_ascii_case("en") {
            Lang::En
        } else {
            Lang::Vi
        }
    }

    /// The code.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }
}

/// (key, Vietnamese, English).
const WORDS: &[(&str, &str, &str)] = &[
    ("acknowledge", "Đã biết", "Acknowledge"),
    ("acknowledged", "Đã xác nhận", "Acknowledged"),
    ("action", "Thao tác", "Action"),
    ("add_language", "Thêm bản tiếng khác", "Add a language version"),
    ("alerts", "Cảnh báo", "Alerts"),
    ("all_alerts", "Tất cả cảnh báo", "All alerts"),
    ("all_areas", "Tất cả địa bàn", "All areas"),
    ("all_schedules", "Tất cả lịch phát", "All schedules"),
    ("approval", "Phê duyệt", "Approval"),
    ("approve", "Duyệt", "Approve"),
    ("area", "Địa bàn", "Area"),
    ("audio", "Âm thanh", "Audio"),
    ("audit", "Nhật ký", "Audit log"),
    ("back_home", "Về trang chính", "Back to the dashboard"),
    ("broadcast", "Buổi phát", "Broadcast"),
    ("bulletin", "Bản tin", "Bulletin"),
    ("bulletins", "Bản tin", "Bulletins"),
    ("cancel_schedule", "Hủy lịch phát", "Cancel this schedule"),
    ("cancelled", "Đã hủy", "Cancelled"),
    ("category", "Loại tin", "Category"),
    (
        "chart_caption",
        "Nhiệt độ (°C, đỏ) và dung lượng trống (MB, xanh) theo thời gian",
        "Temperature (°C, red) and free disk (MB, blue) over time",
    ),
    ("check_before_saving", "Xin kiểm tra trước khi lưu:", "Please check before saving:"),
    ("comment", "Ý kiến", "Comment"),
    ("create", "Tạo", "Create"),
    ("created", "Tạo lúc", "Created"),
    ("daily_at", "Hằng ngày lúc", "Daily at"),
    ("dashboard", "Tổng quan", "Dashboard"),
    ("detail", "Chi tiết", "Detail"),
    ("disabled", "Đã khóa", "Disabled"),
    ("disk_free", "Bộ nhớ trống", "Free disk"),
    ("download", "Tải về", "Download"),
    ("download_csv", "Tải CSV", "Download CSV"),
    ("download_xlsx", "Tải Excel (XLSX)", "Download Excel (XLSX)"),
    ("emergency", "Phát khẩn cấp", "Emergency"),
    (
        "emergency_confirm",
        "Tôi xác nhận phát ngay cảnh báo này tới toàn bộ địa bàn đã chọn",
        "I confirm: send this warning to the whole area now",
    ),
    ("emergency_right", "Được phát khẩn cấp", "May send emergencies"),
    ("expires", "Hết hiệu lực", "Expires"),
    ("file", "Tệp âm thanh", "Audio file"),
    ("from", "Từ ngày", "From"),
    ("from_address", "Từ địa chỉ", "From address"),
    ("health", "Tình trạng thiết bị", "Device health"),
    ("health_history", "Lịch sử tình trạng", "Health history"),
    ("kind", "Loại", "Kind"),
    ("language", "Ngôn ngữ", "Language"),
    ("languages", "Các bản ngôn ngữ", "Language versions"),
    ("last_seen", "Liên lạc lần cuối", "Last seen"),
    ("length", "Thời lượng", "Length"),
    ("library_empty", "Chưa có bản ghi cảnh báo nào trong thư viện", "The library of warnings is empty"),
    ("login", "Đăng nhập", "Log in"),
    ("login_title", "Đăng nhập hệ thống truyền thanh Loa", "Log in to Loa"),
    ("logout", "Đăng xuất", "Log out"),
    ("new_schedule", "Lịch phát mới", "New schedule"),
    ("new_user", "Người dùng mới", "New user"),
    ("next_7_days", "7 ngày tới", "Next 7 days"),
    ("no_alerts", "Không có cảnh báo", "No alerts"),
    ("no_receivers", "Chưa có thiết bị thu nào", "No receivers yet"),
    ("none", "Chưa có", "None"),
    ("nothing_planned", "Không có lịch phát", "Nothing planned"),
    ("object", "Đối tượng", "Object"),
    ("offline", "Mất kết nối", "Offline"),
    ("once", "Một lần lúc", "Once at"),
    ("online", "Đang kết nối", "Online"),
    ("open", "Chưa xử lý", "Open"),
    ("open_alerts", "Cảnh báo chưa xử lý", "Open alerts"),
    ("opened", "Phát sinh lúc", "Opened"),
    ("password", "Mật khẩu", "Password"),
    ("planned", "Giờ phát", "Planned"),
    ("planned_count", "Theo kế hoạch", "Planned"),
    ("playing_now", "Đang phát", "Playing now"),
    ("plays", "Lượt phát", "Plays"),
    ("priority", "Mức ưu tiên", "Priority"),
    ("reason", "Lý do", "Reason"),
    ("reasons", "Lý do", "Reasons"),
    ("receiver", "Thiết bị thu", "Receiver"),
    ("receivers", "Thiết bị thu", "Receivers"),
    ("receivers_by_commune", "Thiết bị theo xã", "Receivers by commune"),
    ("recent_plays", "Lượt phát gần đây", "Recent plays"),
    ("refreshes", "Trang tự cập nhật mỗi 5 giây", "This page refreshes every 5 s"),
    ("reject", "Trả lại", "Reject"),
    ("reject_reason", "Lý do trả lại (bắt buộc)", "Why (required)"),
    ("remote_control", "Điều khiển từ xa", "Remote control"),
    ("repeat", "Số lần phát", "Times"),
    ("reports", "Báo cáo", "Reports"),
    ("resolved", "Đã hết", "Resolved"),
    ("role", "Vai trò", "Role"),
    ("save", "Lưu", "Save"),
    ("schedule_it", "Lên lịch phát", "Schedule it"),
    ("schedules", "Lịch phát", "Schedule"),
    ("send_now", "PHÁT NGAY", "SEND NOW"),
    ("sent", "Đã phát", "Sent"),
    ("set_volume", "Đặt âm lượng", "Set volume"),
    ("show", "Xem", "Show"),
    ("size", "Dung lượng", "Size"),
    ("speak", "Đọc thành tiếng và lưu", "Speak it and save"),
    ("speaker", "Loa", "Loudspeaker"),
    ("started", "Bắt đầu", "Started"),
    ("state", "Trạng thái", "State"),
    ("status_missed", "Không phát được", "Missed"),
    ("status_played", "Đã phát", "Played"),
    ("submit", "Gửi duyệt", "Submit for approval"),
    ("text", "Nội dung", "Text"),
    ("times", "Số lần", "Times"),
    ("title", "Tiêu đề", "Title"),
    ("to", "Đến ngày", "To"),
    ("todays_plays", "Lượt phát hôm nay", "Today's plays"),
    (
        "tts_hint",
        "Máy đọc tiếng Việt (espeak-ng) – nên nghe lại trước khi gửi duyệt",
        "Read by an offline Vietnamese voice (espeak-ng): listen before submitting",
    ),
    ("type_text", "Soạn văn bản để máy đọc", "Type text to be spoken"),
    ("upload", "Tải lên", "Upload"),
    ("upload_recording", "Tải lên bản ghi âm", "Upload a recording"),
    ("username", "Tên đăng nhập", "Username"),
    ("users", "Người dùng", "Users"),
    ("village", "Thôn/bản", "Village"),
    ("warning_recording", "Bản ghi cảnh báo", "Warning recording"),
    ("weekly_on", "Hằng tuần vào", "Weekly on"),
    ("when", "Thời gian", "When"),
    ("who", "Người thực hiện", "Who"),
    ("whole_tree", "Toàn bộ", "Everything"),
    ("register_receiver", "Đăng ký thiết bị thu", "Register a receiver"),
    ("register", "Đăng ký", "Register"),
    ("name", "Tên", "Name"),
    ("areas", "Địa bàn", "Areas"),
    ("new_area", "Thêm địa bàn", "New area"),
    ("inside", "Thuộc", "Inside"),
    ("one_step", "Duyệt một bước", "One-step approval"),
    ("turn_on", "Bật", "Turn on"),
    ("turn_off", "Tắt", "Turn off"),
    ("config_once", "Tệp cấu hình chứa mật khẩu của thiết bị và chỉ hiện một lần: hãy sao chép ngay.", "This config file holds the receiver's password and is shown once: copy it now."),
    ("config_howto", "Chép vào thiết bị thu (Raspberry Pi) thành /etc/loa/receiver.toml rồi chạy: loa-receiver --config /etc/loa/receiver.toml", "Copy it to the receiver (Raspberry Pi) as /etc/loa/receiver.toml, then run: loa-receiver --config /etc/loa/receiver.toml"),
    ("kind_province", "Tỉnh", "Province"),
    ("kind_district", "Huyện", "District"),
    ("kind_commune", "Xã", "Commune"),
    ("kind_village", "Thôn/bản", "Village"),
    ("kind_other", "Khác", "Other"),
    ("yes_i_am_sure", "Tôi đã kiểm tra, vẫn lưu", "I have checked; save anyway"),
    // Roles.
    ("role_admin", "Quản trị", "Administrator"),
    ("role_editor", "Biên tập", "Editor"),
    ("role_approver", "Phê duyệt", "Approver"),
    ("role_operator", "Vận hành", "Operator"),
    ("role_viewer", "Xem", "Viewer"),
    // Categories.
    ("cat_policy", "Chính sách", "Policy"),
    ("cat_market", "Thị trường", "Market"),
    ("cat_security", "An ninh", "Security"),
    ("cat_disaster", "Thiên tai", "Disaster / weather"),
    ("cat_health", "Y tế", "Health"),
    ("cat_other", "Khác", "Other"),
    // Languages of bulletins.
    ("lang_vi", "Tiếng Việt", "Vietnamese"),
    ("lang_tay", "Tiếng Tày", "Tày"),
    ("lang_nut", "Tiếng Nùng", "Nùng"),
    ("lang_hmn", "Tiếng H'Mông", "Hmong"),
    ("lang_dao", "Tiếng Dao", "Dao"),
    ("lang_en", "Tiếng Anh", "English"),
    // Approval states.
    ("approval_draft", "Bản nháp", "Draft"),
    ("approval_submitted", "Chờ duyệt", "Waiting for approval"),
    ("approval_approved", "Đã duyệt", "Approved"),
    ("approval_rejected", "Bị trả lại", "Rejected"),
    // Audio states.
    ("audio_encoding", "Đang xử lý", "Encoding"),
    ("audio_ready", "Sẵn sàng", "Ready"),
    ("audio_failed", "Lỗi", "Failed"),
    ("audio_cancelled", "Đã hủy", "Cancelled"),
    // Play states.
    ("status_planned", "Đã lên lịch", "Planned"),
    ("status_downloading", "Đang tải", "Downloading"),
    ("status_ready", "Sẵn sàng", "Ready"),
    ("status_playing", "Đang phát", "Playing"),
    ("status_preempted", "Bị ngắt", "Interrupted"),
    ("status_cancelled", "Đã hủy", "Cancelled"),
    // Tiers.
    ("tier_normal", "Thường", "Normal"),
    ("tier_priority", "Ưu tiên", "Priority"),
    ("tier_emergency", "Khẩn cấp", "Emergency"),
    // Weekdays.
    ("day_mon", "Thứ 2", "Mon"),
    ("day_tue", "Thứ 3", "Tue"),
    ("day_wed", "Thứ 4", "Wed"),
    ("day_thu", "Thứ 5", "Thu"),
    ("day_fri", "Thứ 6", "Fri"),
    ("day_sat", "Thứ 7", "Sat"),
    ("day_sun", "Chủ nhật", "Sun"),
    // Remote commands.
    ("cmd_stop", "Dừng phát", "Stop now"),
    ("cmd_test_tone", "Phát âm thử", "Test tone"),
    ("cmd_resync", "Đồng bộ lại", "Resync"),
    ("cmd_restart", "Khởi động lại", "Restart"),
    // Alert kinds.
    ("alert_offline", "Mất kết nối", "Offline"),
    ("alert_missed_play", "Không phát được", "Missed play"),
    ("alert_speaker_fault", "Hỏng đường loa", "Loudspeaker fault"),
    ("alert_amp_fault", "Hỏng bộ khuếch đại", "Amplifier fault"),
    ("alert_disk_full", "Sắp đầy bộ nhớ", "Disk nearly full"),
    ("alert_clock_offset", "Lệch đồng hồ", "Clock off"),
    ("alert_temperature", "Quá nóng", "Too hot"),
    // Messages made by the console itself.
    ("msg_saved", "Đã lưu.", "Saved."),
    ("msg_sent", "Đã gửi lệnh.", "Command sent."),
    ("msg_late_hour", "Giờ phát {time} là ban đêm. Có chắc không?", "{time} is at night. Are you sure?"),
    ("msg_no_time", "Chưa chọn giờ phát.", "Choose when it plays."),
    ("msg_no_days", "Chưa chọn ngày trong tuần.", "Choose the weekdays."),
    ("msg_bad_number", "Số không hợp lệ.", "Not a valid number."),
    (
        "msg_confirm_emergency",
        "Hãy đánh dấu ô xác nhận trước khi phát khẩn cấp.",
        "Tick the confirmation before sending an emergency.",
    ),
    ("msg_empty_text", "Chưa có nội dung để đọc.", "There is no text to speak."),
    ("msg_not_found", "Không tìm thấy trang này.", "There is no such page."),
];

/// The words of `lang`, by key.
pub fn words(lang: Lang) -> BTreeMap<&'static str, &'static str> {
    WORDS
        .iter()
        .map(|(k, vi, en)| {
            (
                *k,
                match lang {
                    Lang::Vi => *vi,
                    Lang::En => *en,
                },
            )
        })
        .collect()
}

/// One word of `lang` (the key itself if there is none: visible in the page and caught by the tests).
pub fn word(lang: Lang, key: &str) -> &'static str {
    WORDS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, vi, en)| match lang {
            Lang::Vi => *vi,
            Lang::En => *en,
        })
        .unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_vietnamese_is_the_default() {
        let mut keys: Vec<&str> = WORDS.iter().map(|w| w.0).collect();
        keys.sort_unstable();
        let n = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), n, "a key appears twice");
        assert_eq!(Lang::from_code("fr"), Lang::Vi);
        assert_eq!(word(Lang::En, "save"), "Save");
        assert_eq!(word(Lang::Vi, "save"), "Lưu");
    }
}
