from cryptonorm.cli import main

main()
