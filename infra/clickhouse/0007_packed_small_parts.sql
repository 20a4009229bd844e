-- Small parts (every insert of a steady stream, and the first merges of them) are written "packed": one
-- file per part instead of a dozen. Creating and deleting files is most of what a small insert and its
-- merges cost (on ext4 the search for a free inode dominates); parts above 10 MiB are stored as before.
-- Only newly written parts change; existing parts are read as they are.
ALTER TABLE usage_events MODIFY SETTING min_bytes_for_full_part_storage = 10485760;
ALTER TABLE usage_by_minute MODIFY SETTING min_bytes_for_full_part_storage = 10485760;
ALTER TABLE usage_by_hour MODIFY SETTING min_bytes_for_full_part_storage = 10485760;
ALTER TABLE usage_by_day MODIFY SETTING min_bytes_for_full_part_storage = 10485760;
ALTER TABLE directory_events MODIFY SETTING min_bytes_for_full_part_storage = 10485760;
