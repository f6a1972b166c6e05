-- directory_roles: every user with their roles.
SELECT user_id, name, roles FROM directory_users ORDER BY user_id;
