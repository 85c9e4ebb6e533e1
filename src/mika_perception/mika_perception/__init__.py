"""Face emotion perception for Mika."""
