-- Issue 12: an operator can kill files (`fleet migrate kill`): KILLED files are never copied
-- and never retried. A migration of its own because PostgreSQL does not let a transaction use
-- an enum value it added (the next migration's indexes and the code use it).
ALTER TYPE "file_status" ADD VALUE 'KILLED';
