"""Who did it: people (users, roles, passwords, login sessions, lock-out, signatures of acts) and line stations
(API tokens), all recorded as events in the catalog. Imports `catalog` only."""
