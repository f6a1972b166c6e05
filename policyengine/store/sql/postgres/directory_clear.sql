-- directory_clear: forget every user (before replacing the directory in the same transaction).
DELETE FROM directory_users;
