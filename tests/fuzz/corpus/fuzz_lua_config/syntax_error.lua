attention{shards=2
