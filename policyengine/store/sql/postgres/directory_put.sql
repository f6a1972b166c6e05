-- directory_put: add or replace one user.
INSERT INTO directory_users (user_id, name, roles) VALUES (%(user_id)s, %(name)s, %(roles)s)
ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, roles = excluded.roles;
