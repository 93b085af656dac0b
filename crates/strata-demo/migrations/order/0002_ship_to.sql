-- Where an order goes, from the buyer's profile in the user service when it was placed.
ALTER TABLE orders ADD COLUMN ship_to TEXT NOT NULL DEFAULT '';
