-- Workspace domain-wide delegation (issue 21): a connection authenticates
-- either with its user's refresh token (subject NULL) or as `subject`, a
-- member of the organisation, through the deployment's service account (no
-- refresh token stored). The e-mail address is not a secret: status shows it.
ALTER TABLE plansync.connections ADD COLUMN subject TEXT CHECK (subject <> '');
